"""The runner bounds, retries, stamps and cleans up after its program (docs/lock-protocol.md)."""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from runner_helpers import PY, Run

from clara_wf.runner import EXIT_LOCK_WRITE, EXIT_LOCKDIR_GONE, EXIT_RUN_TIMEOUT, protocol


@pytest.fixture
def run(tmp_path):
    r = Run(tmp_path)
    yield r
    r.kill_all()


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _pids_running(token: str):
    """Pids whose command line holds ``token`` (a unique sleep duration)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path("/proc", entry, "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if token in cmdline and _alive(int(entry)):
                found.append(int(entry))
    return found


# -- run timeout ---------------------------------------------------------------------


def test_program_past_its_run_timeout_is_stopped_and_named(run):
    run.start("a", ["sleep", "60"], wait="", NVIDIA_CLARA_RUNTIMEOUT="0.5")
    run.start("b", ["true"], wait="a.lock")
    t0 = time.monotonic()
    assert run.wait("a") == EXIT_RUN_TIMEOUT
    assert time.monotonic() - t0 < 20
    marker = run.marker("a")
    assert marker["status"] == "run-timeout" and marker["exit_code"] == EXIT_RUN_TIMEOUT
    assert marker["program_exit_code"] == -signal.SIGTERM
    assert "run timeout (NVIDIA_CLARA_RUNTIMEOUT = 0.5 s)" in marker["message"]
    assert "ran past 0.5 s; sending SIGTERM" in run.stderr("a")
    # The seed's TIMEOUT keeps bounding the wait only; downstream stops at once.
    assert run.wait("b") == 114 and run.marker("b")["failed_stage"] == "a"


def test_program_that_ignores_sigterm_gets_sigkill_after_the_grace(run):
    program = [PY, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"]
    run.start("a", program, wait="", NVIDIA_CLARA_RUNTIMEOUT="0.5", NVIDIA_CLARA_STOPGRACE="0.5")
    assert run.wait("a") == EXIT_RUN_TIMEOUT
    assert run.marker("a")["program_exit_code"] == -signal.SIGKILL
    assert "did not exit within 0.5 s of SIGTERM; sending SIGKILL" in run.stderr("a")


def test_sigterm_to_the_runner_reaches_a_stubborn_program_then_sigkill(run):
    program = [PY, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"]
    run.start("a", program, wait="", NVIDIA_CLARA_STOPGRACE="0.3")
    run.wait_for_stderr("a", "started")
    deadline = time.monotonic() + 30
    while "up" not in run.stdout("a"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    run.procs["a"].send_signal(signal.SIGTERM)
    assert run.wait("a") == 128 + signal.SIGKILL
    assert run.marker("a")["status"] == "failed"


@pytest.mark.parametrize("variable,value", [
    ("NVIDIA_CLARA_RUNTIMEOUT", "1h"), ("NVIDIA_CLARA_RETRIES", "-1"), ("NVIDIA_CLARA_RETRIES", "2.5"),
    ("NVIDIA_CLARA_RETRYBACKOFF", "inf"), ("NVIDIA_CLARA_STOPGRACE", "-3"),
])
def test_bad_run_values_are_configuration_errors(run, variable, value):
    run.start("a", ["true"], wait="", **{variable: value})
    assert run.wait("a") == 112
    assert "configuration error: %s must be" % variable in run.stderr("a")


# -- retries -------------------------------------------------------------------------

FAILS_TWICE = """
import pathlib, sys
counter = pathlib.Path("count")
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
print("attempt", n, flush=True)
sys.exit(0 if n >= 3 else 7)
"""


def test_retries_a_program_that_fails_twice_then_succeeds(run):
    run.start("a", [PY, "-c", FAILS_TWICE], wait="", NVIDIA_CLARA_RETRIES="2", NVIDIA_CLARA_RETRYBACKOFF="0.05")
    run.start("b", ["true"], wait="a.lock")
    assert run.wait("a") == 0 and run.wait("b") == 0
    lock = run.lock("a")
    assert [(a["attempt"], a["program_exit_code"], a["status"]) for a in lock["attempts"]] == [
        (1, 7, "failed"), (2, 7, "failed"), (3, 0, "succeeded")]
    assert lock["attempts"][1]["start_epoch"] >= lock["attempts"][0]["end_epoch"] + 0.05  # the back-off
    err = run.stderr("a")
    assert "retrying in 0.05 s (attempt 2 of 3)" in err and "retrying in 0.1 s (attempt 3 of 3)" in err
    assert "(attempt 3 of 3)" in err
    log = (run.logs / "a.log").read_text()
    assert [line.split(" ", 1)[1] for line in log.splitlines() if " attempt " in line and "[" not in line] == [
        "attempt 1", "attempt 2", "attempt 3"]


def test_retries_exhausted_leave_the_last_exit_code_and_every_attempt(run):
    run.start("a", ["sh", "-c", "exit 3"], wait="", NVIDIA_CLARA_RETRIES="1", NVIDIA_CLARA_RETRYBACKOFF="0")
    assert run.wait("a") == 3
    marker = run.marker("a")
    assert [a["program_exit_code"] for a in marker["attempts"]] == [3, 3]
    assert marker["message"].startswith("program exited with 3")


def test_no_retry_after_sigterm(run):
    run.start("a", ["sleep", "60"], wait="", NVIDIA_CLARA_RETRIES="5")
    run.wait_for_stderr("a", "started sleep 60")
    run.procs["a"].send_signal(signal.SIGTERM)
    assert run.wait("a") == 128 + signal.SIGTERM
    assert len(run.marker("a")["attempts"]) == 1


# -- log lines -----------------------------------------------------------------------

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def test_every_log_line_is_stamped_and_the_text_after_it_unchanged(run):
    text = "plain\n  indented [x] \n\ttab\nno end"
    run.start("a", ["printf", "%s", text], wait="")
    assert run.wait("a") == 0
    assert run.stdout("a") == text  # the container's stream is untouched
    lines = (run.logs / "a.log").read_text().splitlines()
    assert all(STAMP.match(line) for line in lines), lines
    bodies = [line[STAMP.match(line).end():] for line in lines]
    assert ["plain", "  indented [x] ", "\ttab", "no end"] == [b for b in bodies if not b.startswith("[clara-wf-stage")]
    assert any(b.startswith("[clara-wf-stage a] program exited with 0") for b in bodies)


# -- descendants ---------------------------------------------------------------------


def test_background_children_setsid_ones_included_end_with_the_stage(run):
    token = "%d.%06d" % (400 + random.randrange(100), random.randrange(10**6))
    script = "sleep %s & setsid sleep %s & nohup sleep %s >/dev/null 2>&1 & sleep 0.3; echo forked" % (token, token, token)
    t0 = time.monotonic()
    run.start("a", ["sh", "-c", script], wait="")
    assert run.wait("a") == 0
    took = time.monotonic() - t0
    assert _pids_running(token) == []
    assert "ended 3 processes the program left running" in run.stderr("a")
    assert took < 4.0  # no 5 s wait per output stream (was 10 s)
    assert run.stdout("a") == "forked\n"


def test_descendants_of_a_failed_program_end_too(run):
    token = "%d.%06d" % (500 + random.randrange(100), random.randrange(10**6))
    run.start("a", ["sh", "-c", "setsid sh -c 'sleep %s' & exit 4" % token], wait="")
    assert run.wait("a") == 4
    assert _pids_running(token) == []


# -- fail fast -----------------------------------------------------------------------


def test_deleted_lockdir_ends_the_waiting_stage_at_once(run):
    run.start("b", ["true"], wait="a.lock", NVIDIA_CLARA_TIMEOUT="60")
    run.wait_for_stderr("b", "waiting for a.lock")
    run.start("a", ["sh", "-c", 'rm -rf "$NVIDIA_CLARA_LOCKDIR"'], wait="")
    t0 = time.monotonic()
    assert run.wait("b") == EXIT_LOCKDIR_GONE
    assert time.monotonic() - t0 < 10
    assert "was deleted or moved while waiting for a.lock" in run.stderr("b")
    # The upstream does not re-create the folder behind the waiting stages' backs.
    assert run.wait("a") == EXIT_LOCK_WRITE
    assert "cannot write %s: No such file or directory" % (run.locks / "a.lock") in run.stderr("a")
    assert not run.locks.exists()


def test_deleted_lockdir_is_seen_when_polling_too(run):
    run.start("b", ["true"], wait="a.lock", NVIDIA_CLARA_TIMEOUT="60", CLARA_WF_RUNNER_POLL="1")
    run.wait_for_stderr("b", "waiting for a.lock")
    shutil.rmtree(run.locks)
    assert run.wait("b") == EXIT_LOCKDIR_GONE


def test_a_full_disk_leaves_no_partial_record(tmp_path, monkeypatch):
    path = tmp_path / "a.lock"
    real_write = os.write
    calls = []

    def write_some_then_enospc(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write_some_then_enospc)
    with pytest.raises(OSError) as err:
        protocol.write_record_atomic(str(path), {"status": "succeeded"})
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert not path.exists() and os.listdir(tmp_path / ".tmp") == []


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -rm (a user and mount namespace) for a small tmpfs")
def test_full_disk_one_line_naming_the_path(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    run = Run(disk)
    env = run.env("a", "")
    script = (
        'mount -t tmpfs -o size=64k tmpfs "$1" && mkdir -p "$1/app/locks/.tmp" "$1/app/logs" && '
        '(dd if=/dev/zero of="$1/fill" bs=4k 2>/dev/null; true) && '
        'exec "$2" -m clara_wf.runner -- true'
    )
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", str(disk), PY], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_LOCK_WRITE, proc.stderr
    lock = disk / "app" / "locks" / "a.lock"
    assert "cannot write %s: No space left on device" % lock in proc.stderr
    assert "Traceback" not in proc.stderr
