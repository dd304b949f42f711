"""Debugging a stage: `clara-wf shell STAGE [WORKFLOW] [JOB]` and `test --pause-before/--pause-after`.

The shell is driven the way a script would drive it: commands on stdin (no terminal)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_error_last_line, assert_one_line_error, run_cli

pytestmark = pytest.mark.helm
HAVE_BWRAP = shutil.which("bwrap") is not None
SANDBOXES = ["none", pytest.param("bwrap", marks=pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap not installed"))]
JOB = "00000000-0000-0000-0000-000000000000"
TWO_STAGES = """workflows:
  ab:
    stages: ["a", "b"]
    waitLocks: ["", "a.lock"]
    args: ["", ""]
"""


@pytest.fixture
def two(project):
    for name in ("a", "b"):
        assert run_cli("cs", name, cwd=project).returncode == 0
    with open(project / "apps" / "b" / "requirements.txt", "a") as handle:
        handle.write("six==1.16.0\n")  # b has an environment of its own
    values = project / "charts/clara-workflow/values.yaml"
    values.write_text(values.read_text().replace("workflows:\n", TWO_STAGES, 1))
    (project / "test-data" / JOB / "input").mkdir(parents=True)
    (project / "test-data" / JOB / "input" / "scan.dcm").write_text("ct")
    return project


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_shell_is_the_stages_environment(two, sandbox):
    script = ('echo "stage=$NVIDIA_CLARA_STAGENAME"; echo "cwd=$(pwd)"; ls "$NVIDIA_CLARA_APPDIR/input";'
              'python3 -c "import sys, six; print(\'python=\' + sys.executable)";'
              'python3 -c "from clara_wf.payload import clara_payload as p; print([e.name for e in p.input_entries])";'
              "exit 7\n")
    result = run_cli("shell", "b", "ab", JOB, "--sandbox", sandbox, cwd=two, input=script)
    assert result.returncode == 7, result.stderr  # the shell's own exit code
    lines = result.stdout.splitlines()
    assert "stage=b" in lines and "['payload']" in lines
    assert any(line.startswith("python=") and "/venvs/" in line for line in lines)  # b's own environment
    if sandbox == "bwrap":
        assert "cwd=/app" in lines  # the pod's paths, for real
    else:
        assert f"cwd={two / '.clara-wf' / 'runs' / JOB / 'b' / 'app'}" in lines


def test_shell_of_a_stage_alone_reads_its_own_input(two):
    folder = two / "test-data" / JOB / "a" / "input"
    folder.mkdir(parents=True)
    (folder / "alone.txt").write_text("x")
    result = run_cli("shell", "a", input='ls "$NVIDIA_CLARA_APPDIR/input"\n', cwd=two)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["alone.txt"]


@pytest.mark.parametrize("args, fragment", [
    (["shell", "nope"], "no stage 'nope'"),
    (["shell", "a", "nope"], "no workflow 'nope'"),
    (["shell", "a", "ai-only"], "workflow 'ai-only' has no stage 'a'"),
])
def test_shell_refusals_are_one_line(two, args, fragment):
    assert_one_line_error(run_cli(*args, cwd=two, input="exit 0\n"), 2, fragment)


def _start(project, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clara_wf", "test", "ab", "--engine", "local", *args], cwd=project,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if k != "CLARA_WF_CHART_DIR"})


def _wait_for_line(proc: subprocess.Popen, fragment: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if fragment in line:
            return line
    proc.kill()
    raise AssertionError(f"no {fragment!r} in:\n{''.join(seen)}")


@pytest.mark.parametrize("option, held, continue_name", [
    ("--pause-before", "before b", "continue-b"),
    ("--pause-after", "after a", "continue-b"),
    ("--pause-after", "after b (the end of the run)", "continue-end"),
])
def test_pause_holds_the_run_until_continued(two, option, held, continue_name):
    stage = "a" if held == "after a" else "b"
    proc = _start(two, option, stage)
    try:
        line = _wait_for_line(proc, f"paused {held}")
        control = two / "test-data" / JOB / "pause" / continue_name
        assert str(control) in line and "clara-wf shell" in line
        time.sleep(1.0)
        b_output = two / "test-data" / JOB / "b" / "output" / "scan.dcm"
        assert (two / "test-data" / JOB / "a" / "output" / "scan.dcm").exists()  # a ran
        assert b_output.exists() == (continue_name == "continue-end")  # b waits, unless it is the end
        assert proc.poll() is None  # held
        control.write_text("")
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"continuing {held}" in err
    assert b_output.read_text() == "ct"


def test_pause_at_an_unknown_stage_is_refused(two):
    assert_error_last_line(run_cli("test", "ab", "--engine", "local", "--pause-before", "zzz", cwd=two), 2,
                           "cannot pause at 'zzz': the run's stages are a, b")
    assert not Path(two / "test-data" / JOB / "a" / "output").exists()
