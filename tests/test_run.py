"""`clara_wf.run.run_test` called as a library (as the DICOM adapter does): a payload folder
of the caller's choice, run-time values set per run, the run record, any engine by name."""

from __future__ import annotations

import json

import pytest
from helpers import JOB
from helpers.workflows import add_workflow, python_stage

from clara_wf import engines
from clara_wf.errors import InputError
from clara_wf.events import DONE, StageUpdate
from clara_wf.project import find_project
from clara_wf.run import run_test
from clara_wf.workflow import plan_run

pytestmark = pytest.mark.helm

SHOW = ("import os, pathlib; app = pathlib.Path(os.environ['NVIDIA_CLARA_APPDIR']);"
        "(app / 'output' / 'seen.txt').write_text((app / 'input' / 'in.txt').read_text())")


def test_a_run_on_a_payload_folder_chosen_by_the_caller(project, tmp_path):
    add_workflow(project, "one", {"copy": python_stage(SHOW)})
    jobs = tmp_path / "adapter-jobs"
    (jobs / JOB / "study").mkdir(parents=True)
    (jobs / JOB / "study" / "in.txt").write_text("study")
    events = []

    class Recording(list):
        """A display that keeps what it was shown; run_test closes it after the run."""

        __call__ = list.append

        def close(self):
            events.extend(self)

    result = run_test(find_project(start=project), "one", JOB, engine="local", sandbox="none",
                      payloads_root=jobs, overrides={"dicomAdapter.input": "study", "dicomAdapter.output": "results"}, display=lambda stages: Recording())
    assert result.succeeded and result.engine == "local"
    assert (jobs / JOB / "results" / "seen.txt").read_text() == "study"
    assert result.run.output_folders() == [jobs / JOB / "results"]
    assert not (project / "test-data" / JOB / "run.json").exists()
    record = json.loads((jobs / JOB / "run.json").read_text())
    assert record == result.record and record["engine"] == "local"
    assert [(s["stage"], s["state"]) for s in record["stages"]] == [("copy", "done")]
    assert any(isinstance(e, StageUpdate) and e.state == DONE for e in events)


def test_run_time_values_set_per_run_reach_the_helm_values(project, tmp_path):
    run = plan_run(find_project(start=project), payloads_root=tmp_path, need_test_data=False,
                   overrides={"dicomAdapter.input": "/in", "dicomAdapter.output": "/out"})
    values = run.set_string()
    assert values["dicomAdapter.input"] == "/in" and values["dicomAdapter.output"] == "/out"
    assert values["workflow.payloads.hostPath"] == str(tmp_path.resolve())
    assert run.job_dir == tmp_path / JOB


def test_only_the_values_a_caller_may_set_are_accepted(project):
    with pytest.raises(InputError, match="cannot set run-time value"):
        plan_run(find_project(start=project), overrides={"workflow.id": "other"})


def test_the_run_is_frozen(project):
    run = plan_run(find_project(start=project))
    with pytest.raises(AttributeError):
        run.trtis_uri = "elsewhere:8000"  # type: ignore[misc]


def test_engines_are_found_by_name():
    assert {"local", "kubernetes"} <= set(engines.available())
    assert engines.get("local").name == "local"
    with pytest.raises(InputError, match="unknown engine 'warp'"):
        engines.get("warp")


def test_test_output_json_prints_the_run_record(project):
    from helpers import run_cli

    add_workflow(project, "one", {"hello": python_stage("print('hi')")})
    (project / "test-data" / JOB / "hello" / "input").mkdir(parents=True)
    result = run_cli("test", "one", "--engine", "local", "--sandbox", "none", "--output", "json", cwd=project)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record == json.loads((project / "test-data" / JOB / "run.json").read_text())
    assert [(s["stage"], s["state"]) for s in record["stages"]] == [("hello", "done")]


def test_the_live_display_draws_every_stage_and_leaves_them_on_screen():
    import io

    from clara_wf.display import RunDisplay
    from clara_wf.events import FAILED, LogLine

    screen = io.StringIO()
    shown = RunDisplay(["first", "second"], stream=screen, live=True)
    shown(StageUpdate("first", DONE))
    shown(LogLine("second", "thinking"))
    shown(StageUpdate("second", FAILED, "exited with 3"))
    shown.close()
    text = screen.getvalue()
    assert "second | thinking" in text and "exited with 3" in text and "done" in text
