"""`clara-wf test --engine local`: the rendered pod run as host processes on this machine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import JOB, REPO, assert_error_last_line, run_cli
from helpers.workflows import add_workflow, python_stage

pytestmark = pytest.mark.helm
HAVE_BWRAP = shutil.which("bwrap") is not None
SANDBOXES = ["none", pytest.param("bwrap", marks=pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap not installed"))]

# Each stage proves it sees its folders through the NVIDIA_CLARA_* variables: it reads
# every file of its input folder and writes them, tagged, to its output folder.
COPY = (
    "import os, pathlib;"
    "app = pathlib.Path(os.environ['NVIDIA_CLARA_APPDIR']);"
    "src, dst = app / 'input', app / 'output';"
    "[ (dst / f.name).write_text(f.read_text() + os.environ['NVIDIA_CLARA_STAGENAME'] + ';') for f in src.iterdir() ];"
    "print('copied', sorted(p.name for p in dst.iterdir()))"
)


def payload(project: Path) -> Path:
    return project / "test-data" / JOB


def test_three_stages_run_in_order_through_their_folders(project):
    add_workflow(project, "chain", {"a": python_stage(COPY), "b": python_stage(COPY), "c": python_stage(COPY)})
    (payload(project) / "a" / "input").mkdir(parents=True)
    (payload(project) / "a" / "input" / "note.txt").write_text("start;")
    result = run_cli("test", "chain", "--engine", "local", "--sandbox", "none", cwd=project)
    assert result.returncode == 0, result.stderr
    assert (payload(project) / "c" / "output" / "note.txt").read_text() == "start;a;b;c;"
    assert "ls -al " + str(payload(project) / "c" / "output") in result.stdout
    assert "note.txt" in result.stdout
    record = json.loads((payload(project) / "run.json").read_text())
    assert [s["stage"] for s in record["stages"]] == ["a", "b", "c"]
    assert all(s["state"] == "done" and s["exit_code"] == 0 for s in record["stages"])
    starts = [s["start"] for s in record["stages"]]
    ends = [s["end"] for s in record["stages"]]
    assert ends[0] <= starts[1] and ends[1] <= starts[2]  # sequenced by the lock files
    for stage in ("a", "b", "c"):
        log = payload(project) / "logs" / f"{stage}.log"
        assert log.is_file() and "copied" in log.read_text()
    assert "engine: local (requested)" in result.stderr


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_stage_sees_pod_paths_or_host_paths(project, sandbox):
    show = "import os; print('APPDIR=' + os.environ['NVIDIA_CLARA_APPDIR']); print('CWD=' + os.getcwd())"
    add_workflow(project, "show", {"show": python_stage(show)})
    (payload(project) / "show" / "input").mkdir(parents=True)
    result = run_cli("test", "show", "--engine", "local", "--sandbox", sandbox, cwd=project)
    assert result.returncode == 0, result.stderr
    log = (payload(project) / "logs" / "show.log").read_text()
    if sandbox == "bwrap":
        assert "APPDIR=/app" in log and "CWD=/app" in log
    else:
        assert "APPDIR=/app" not in log and str(project / ".clara-wf" / "runs") in log


def test_a_failing_stage_fails_the_run_fast_and_is_named(project):
    add_workflow(project, "breaks", {
        "first": python_stage("print('ok')"),
        "broken": python_stage("import sys; print('bad input', file=sys.stderr); sys.exit(3)"),
        "never": python_stage("open('/tmp/clara-wf-never-ran', 'w')"),
    }, timeout="600")
    (payload(project) / "first" / "input").mkdir(parents=True)
    started = time.monotonic()
    result = run_cli("test", "breaks", "--engine", "local", "--sandbox", "none", cwd=project)
    assert time.monotonic() - started < 60  # not the stages' 600 s timeout
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("clara-wf: stage broken failed")
    assert "bad input" in result.stderr
    record = {s["stage"]: s for s in json.loads((payload(project) / "run.json").read_text())["stages"]}
    assert record["first"]["state"] == "done"
    assert record["broken"]["exit_code"] == 3
    assert record["never"]["status"] == "upstream-failed"
    assert not Path("/tmp/clara-wf-never-ran").exists()


def test_missing_input_folder_is_reported_before_anything_starts(project):
    add_workflow(project, "needs-input", {"reader": python_stage("print(1)")})
    result = run_cli("test", "needs-input", "--engine", "local", cwd=project)
    assert_error_last_line(result, 2, "the job's input folder", "reader/input is missing")
    assert not (payload(project) / "run.json").exists()
    assert not (project / ".clara-wf" / "triton.json").exists()


def test_triton_unreachable_is_a_clear_message(project):
    result = run_cli("test", "--engine", "local", "--trtis-uri", "127.0.0.1:9", cwd=project)
    assert_error_last_line(result, 1, "Triton at 127.0.0.1:9 is not reachable")


def test_a_second_run_on_the_same_job_is_refused(project):
    add_workflow(project, "slow", {"sleeper": python_stage("import time; time.sleep(20)")})
    (payload(project) / "sleeper" / "input").mkdir(parents=True)
    first = subprocess.Popen([sys.executable, "-m", "clara_wf", "test", "slow", "--engine", "local", "--sandbox", "none"],
                             cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (payload(project) / "logs" / "sleeper.log").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = run_cli("test", "slow", "--engine", "local", "--sandbox", "none", cwd=project)
        assert_error_last_line(second, 2, f"job {JOB} is already running")
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)


def test_ctrl_c_stops_every_stage_process(project):
    marker = f"clara-wf-orphan-check-{os.getpid()}"
    add_workflow(project, "long", {
        "one": python_stage(f"import time; time.sleep(120)  # {marker}"),
        "two": python_stage(f"import time; time.sleep(120)  # {marker}"),
    }, waits=["", ""])
    (payload(project) / "one" / "input").mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-m", "clara_wf", "test", "long", "--engine", "local", "--sandbox", "none"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    # Two programs (and, when runners are started as their own interpreters, two runners).
    while time.monotonic() < deadline and _count(marker) < 2:
        time.sleep(0.05)
    assert _count(marker) >= 2
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "clara-wf: interrupted" in err
    time.sleep(0.2)
    assert _count(marker) == 0
    record = json.loads((payload(project) / "run.json").read_text())
    assert record["interrupted"] is True
    assert {s["state"] for s in record["stages"]} == {"stopped"}


def test_sigterm_stops_every_stage_process_like_ctrl_c(project):
    marker = f"clara-wf-sigterm-check-{os.getpid()}"
    add_workflow(project, "long", {"one": python_stage(f"import time; time.sleep(120)  # {marker}")})
    (payload(project) / "one" / "input").mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-m", "clara_wf", "test", "long", "--engine", "local", "--sandbox", "none"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _count(marker) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1] == "clara-wf: interrupted"
    time.sleep(0.2)
    assert _count(marker) == 0


def test_a_triton_started_for_runs_stays_while_another_run_holds_its_job(tmp_path):
    """Run A must not stop the Triton that run B (another job) still uses."""
    from clara_wf.job_lock import job_lock, other_jobs_running

    state = tmp_path / "state"
    with job_lock(state, "11111111-1111-1111-1111-111111111111"):
        assert other_jobs_running(state, "22222222-2222-2222-2222-222222222222")
        assert not other_jobs_running(state, "11111111-1111-1111-1111-111111111111")
    assert not other_jobs_running(state, "22222222-2222-2222-2222-222222222222")


def _count(marker: str) -> int:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return len(out.split())


@pytest.mark.slow
def test_default_workflow_end_to_end_with_real_triton(tmp_path):
    """`make demo`'s job: ai-vnet on the CT phantom through a real Triton; Dice >= 0.9."""
    import SimpleITK as sitk
    from make_phantom import dice_report

    project = tmp_path / "demo with space"  # tritonserver's stub start once broke on such paths
    shutil.copytree(REPO / "charts", project / "charts")
    shutil.copytree(REPO / "apps", project / "apps")
    shutil.copytree(REPO / "test-data" / "models", project / "test-data" / "models")
    shutil.copytree(REPO / "test-data" / JOB / "ai-vnet" / "input", payload(project) / "ai-vnet" / "input")
    result = run_cli("test", cwd=project, env={"KUBECONFIG": str(tmp_path / "none")})
    assert result.returncode == 0, result.stderr
    assert "engine: local (no kubeconfig" in result.stderr
    out = payload(project) / "ai-vnet" / "output" / "recon.seg.mhd"
    mask = sitk.ReadImage(str(out))
    source = sitk.ReadImage(str(payload(project) / "ai-vnet" / "input" / "recon.mhd"))
    assert mask.GetSpacing() == source.GetSpacing() and mask.GetOrigin() == source.GetOrigin()
    assert dice_report(sitk.GetArrayFromImage(mask))["body"] >= 0.9
    assert not (project / ".clara-wf" / "triton.json").exists()  # the Triton it started is stopped


# A DAG stage: reads every INPUTPATHS folder (clara_payload), sleeps, writes one file per output.
DAG_STAGE = (
    "import os, time, pathlib;"
    "from clara_wf.payload import clara_payload;"
    "seen = sorted(f.name + '=' + f.read_text() for e in clara_payload.input_entries for f in pathlib.Path(e.path).iterdir());"
    "time.sleep(float(os.environ.get('NAP', '0')));"
    "[ (pathlib.Path(e.path) / 'out.txt').write_text(os.environ['NVIDIA_CLARA_STAGENAME'] + '(' + ','.join(seen) + ')') "
    "for e in clara_payload.output_entries ]"
)


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_dag_branches_run_in_parallel_and_fan_in(project, sandbox):
    import yaml

    programs = {name: python_stage(DAG_STAGE) for name in ("reader", "seg-a", "seg-b", "merger")}
    add_workflow(project, "fan", programs)
    values_file = project / "charts" / "clara-workflow" / "values.yaml"
    data = yaml.safe_load(values_file.read_text())
    data["workflows"]["fan"] = {
        "stages": ["reader", "seg-a", "seg-b", "merger"],
        "io": {
            "reader": {"inputs": [{"path": "/input"}], "outputs": [{"name": "volume", "path": "/output"}]},
            "seg-a": {"inputs": [{"from": "reader", "path": "/input"}], "outputs": [{"name": "mask", "path": "/output"}]},
            "seg-b": {"inputs": [{"from": "reader", "path": "/input"}], "outputs": [{"name": "mask", "path": "/output"}]},
            "merger": {"inputs": [{"from": "seg-a", "path": "/in/a"}, {"from": "seg-b", "path": "/in/b"}],
                       "outputs": [{"name": "merged", "path": "/output"}]},
        },
    }
    for name in ("seg-a", "seg-b"):
        data["stages"][name]["env"] = {"NAP": "1.5"}
    values_file.write_text(yaml.safe_dump(data))
    (payload(project) / "input").mkdir(parents=True)
    (payload(project) / "input" / "scan.txt").write_text("ct")
    result = run_cli("test", "fan", "--engine", "local", "--sandbox", sandbox, cwd=project)
    assert result.returncode == 0, result.stderr
    assert f"ls -al {payload(project) / 'merger' / 'merged'}" in result.stdout  # the workflow's result
    merged = (payload(project) / "merger" / "merged" / "out.txt").read_text()
    assert merged == "merger(out.txt=seg-a(out.txt=reader(scan.txt=ct)),out.txt=seg-b(out.txt=reader(scan.txt=ct)))"
    record = {s["stage"]: s for s in json.loads((payload(project) / "run.json").read_text())["stages"]}
    # The two branches overlap in time: neither waited for the other.
    assert record["seg-a"]["start"] < record["seg-b"]["end"] and record["seg-b"]["start"] < record["seg-a"]["end"]
    assert record["merger"]["start"] >= max(record["seg-a"]["end"], record["seg-b"]["end"])
