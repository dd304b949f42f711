"""`clara-wf test --stage NAME [JOB]`: one stage, in no workflow; `--standalone`: as the ODK runs an operator."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import assert_one_line_error, run_cli, tree_digest

pytestmark = pytest.mark.helm
HAVE_BWRAP = shutil.which("bwrap") is not None
SANDBOXES = ["none", pytest.param("bwrap", marks=pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap not installed"))]
JOB = "00000000-0000-0000-0000-000000000000"
OTHER_JOB = "22222222-2222-2222-2222-222222222222"

# A stage program that shows what it was given, then passes its input through.
SHOW_ENV = '''import os, shutil, sys
from pathlib import Path
from clara_wf.payload import clara_payload
for key in ("NVIDIA_CLARA_NOSYNCLOCK", "MY_SETTING", "TRITON_MODEL_NAME"):
    print(f"{key}={os.environ.get(key, '<unset>')}")
for entry in clara_payload.input_entries:
    print(f"input {entry.name}: {sorted(p.name for p in Path(entry.path).iterdir())}")
out = Path(clara_payload.output_entries[0].path)
shutil.copytree(clara_payload.input_entries[0].path, out, dirs_exist_ok=True)
'''


@pytest.fixture
def stage(project):
    assert run_cli("cs", "my-op", cwd=project).returncode == 0
    inputs = project / "test-data" / JOB / "my-op" / "input" / "series"
    inputs.mkdir(parents=True)
    (inputs / "1.dcm").write_text("one")
    return project


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_stage_in_no_workflow_runs_alone_on_its_input(stage, sandbox):
    charts_before = tree_digest(stage / "charts")
    result = run_cli("test", "--stage", "my-op", "--engine", "local", "--sandbox", sandbox, cwd=stage)
    assert result.returncode == 0, result.stderr
    assert (stage / "test-data" / JOB / "my-op/output/series/1.dcm").read_text() == "one"
    assert result.stdout.strip().endswith(f"Job 'Test Job' ({JOB}) executed: stage 'my-op' succeeded")
    record = json.loads((stage / "test-data" / JOB / "run.json").read_text())
    assert [s["stage"] for s in record["stages"]] == ["my-op"]
    assert tree_digest(stage / "charts") == charts_before  # the one-stage workflow is not written anywhere


def test_the_job_is_the_one_positional_argument(stage):
    job_input = stage / "test-data" / OTHER_JOB / "my-op" / "input"
    job_input.mkdir(parents=True)
    (job_input / "f").write_text("other job")
    result = run_cli("test", "--stage", "my-op", OTHER_JOB, "--engine", "local", cwd=stage)
    assert result.returncode == 0, result.stderr
    assert (stage / "test-data" / OTHER_JOB / "my-op/output/f").read_text() == "other job"


def test_dry_run_shows_the_one_stage_workflow_it_adds(stage):
    result = run_cli("test", "--stage", "my-op", "--dry-run", "--engine", "local", cwd=stage)
    assert result.returncode == 0, result.stderr
    assert "workflows.clara-wf-stage-my-op.stages[0]=my-op" in result.stdout.splitlines()[0]
    assert "workflow.id=clara-wf-stage-my-op" in result.stdout.splitlines()[0]
    assert "name: my-op" in result.stdout


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_standalone_uses_env_list_and_nosynclock(stage, sandbox):
    app = stage / "apps" / "my-op"
    (app / "main.py").write_text(SHOW_ENV)
    with open(app / "env.list", "a") as handle:
        handle.write("MY_SETTING=a value with spaces = and equals\n")
    env_list = (app / "env.list").read_text().replace(
        "NVIDIA_CLARA_INPUTPATHS=payload:/input", "NVIDIA_CLARA_INPUTPATHS=payload:/input;up-op/seg:/input1")
    (app / "env.list").write_text(env_list.replace("TRITON_MODEL_NAME=", "TRITON_MODEL_NAME=liver"))
    upstream = stage / "test-data" / JOB / "up-op" / "seg"  # where a workflow run leaves up-op's output "seg"
    upstream.mkdir(parents=True)
    (upstream / "mask.nii.gz").write_text("m")
    result = run_cli("test", "--stage", "my-op", "--standalone", "--sandbox", sandbox, cwd=stage)
    assert result.returncode == 0, result.stderr
    for line in ("NVIDIA_CLARA_NOSYNCLOCK=TRUE", "MY_SETTING=a value with spaces = and equals",
                 "TRITON_MODEL_NAME=liver", "input payload: ['series']", "input up-op/seg: ['mask.nii.gz']"):
        assert f"my-op | {line}" in result.stderr, line
    assert (stage / "test-data" / JOB / "my-op/output/series/1.dcm").read_text() == "one"
    assert "stage 'my-op' succeeded (stand-alone)" in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--standalone"], "--standalone runs one stage: give it with --stage NAME"),
    (["--stage", "my-op", "ct", OTHER_JOB], "give only the job"),
    (["--stage", "my-op", "ct"], "job id 'ct' is not a UUID"),
    (["--stage", "nope"], "no stage 'nope'"),
    (["--stage", "Bad_Name"], "no stage 'Bad_Name'"),
    (["--stage", "my-op", OTHER_JOB], f"/{OTHER_JOB}/input/ (or "),
    (["--stage", "my-op", "--standalone", "--engine", "kubernetes"], "--standalone runs on the local engine"),
])
def test_bad_stage_runs_are_one_line(stage, args, fragment):
    assert_one_line_error(run_cli("test", *args, cwd=stage), 2, fragment)


def test_standalone_env_list_problems_are_one_line(stage):
    env_list = stage / "apps" / "my-op" / "env.list"
    env_list.write_text("NVIDIA_CLARA_INPUTPATHS=payload:/input\nnot a name=1\n")
    assert_one_line_error(run_cli("test", "--stage", "my-op", "--standalone", cwd=stage), 2,
                          "env.list, line 2: 'not a name' is not a variable name")
    env_list.write_text("NVIDIA_CLARA_INPUTPATHS=payload:input\nNVIDIA_CLARA_OUTPUTPATHS=o:/output\n")
    assert_one_line_error(run_cli("test", "--stage", "my-op", "--standalone", cwd=stage), 2, "needs an absolute path")
    env_list.unlink()
    assert_one_line_error(run_cli("test", "--stage", "my-op", "--standalone", cwd=stage), 2,
                          "env.list is missing")
