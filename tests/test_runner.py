"""The stage runner, as real processes on real lock folders (docs/lock-protocol.md)."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from runner_helpers import PY, REPO, Run, clean_env, touch_program

from clara_wf.runner import (
    EXIT_CONFIG,
    EXIT_START_FAILED,
    EXIT_TIMEOUT,
    EXIT_UPSTREAM_FAILED,
    WaitTarget,
    procs,
)
from clara_wf.runner.wait import FAILED, READY, check

PY38 = Path("/root/.pyenv/versions/3.8.18/bin/python3.8")


@pytest.fixture
def run(tmp_path):
    r = Run(tmp_path)
    yield r
    r.kill_all()


def _ran(run: Run, stage: str) -> Path:
    return run.root / ("ran-" + stage)


# -- ordering ------------------------------------------------------------------------


def test_linear_chain_runs_in_order_and_leaves_locks_and_logs(run):
    # Started in reverse order, as a pod may start its containers in any order.
    run.start("c", touch_program(_ran(run, "c"), "echo out-c; echo err-c >&2"), wait="b.lock")
    run.start("b", touch_program(_ran(run, "b"), "sleep 0.2"), wait="a.lock")
    run.start("a", touch_program(_ran(run, "a"), "sleep 0.3"), wait="")
    assert [run.wait(s) for s in "abc"] == [0, 0, 0]

    a, b, c = run.lock("a"), run.lock("b"), run.lock("c")
    assert b["start_epoch"] >= a["end_epoch"] and c["start_epoch"] >= b["end_epoch"]
    assert a["status"] == "succeeded" and a["exit_code"] == 0 and a["program_exit_code"] == 0
    assert c["stage"] == "c" and c["lock"] == "c.lock" and c["protocol"] == 1
    assert c["job_id"] == run.job_id and c["job_name"] == "test-job"
    assert c["waited_s"] >= 0.4  # it really waited for a and b
    assert sorted(os.listdir(run.locks)) == [".tmp", "a.lock", "b.lock", "c.lock"]
    assert os.listdir(run.locks / ".tmp") == []  # no temp files left

    # Output goes to the container's streams and to LOGNAME; runner lines are prefixed.
    assert run.stdout("c") == "out-c\n"
    err = run.stderr("c")
    assert "err-c\n" in err
    assert all(line.startswith("[clara-wf-stage c] ") for line in err.splitlines() if line != "err-c")
    log = (run.logs / "c.log").read_text()
    assert "out-c\n" in log and "err-c\n" in log and "[clara-wf-stage c] waiting for b.lock" in log
    assert "inotify" in err  # the event-driven wait is what runs on Linux


def test_diamond_runs_b_and_c_in_parallel_and_d_after_both(run):
    run.start("d", touch_program(_ran(run, "d")), wait="b.lock,c.lock")
    run.start("c", touch_program(_ran(run, "c"), "sleep 0.8"), wait="a.lock")
    run.start("b", touch_program(_ran(run, "b"), "sleep 0.3"), wait="a.lock")
    run.start("a", touch_program(_ran(run, "a"), "sleep 0.2"), wait="")
    assert [run.wait(s) for s in "abcd"] == [0, 0, 0, 0]
    a, b, c, d = (run.lock(s) for s in "abcd")
    assert b["start_epoch"] >= a["end_epoch"] and c["start_epoch"] >= a["end_epoch"]
    assert d["start_epoch"] >= max(b["end_epoch"], c["end_epoch"])
    assert b["start_epoch"] < c["end_epoch"]  # B did not wait for C: DAG order, not a chain
    assert "b.lock, c.lock present" in run.stderr("d")


def test_polling_fallback_orders_a_chain(run):
    run.start("b", touch_program(_ran(run, "b")), wait="a.lock", CLARA_WF_RUNNER_POLL="1")
    run.start("a", touch_program(_ran(run, "a"), "sleep 0.2"), wait="", CLARA_WF_RUNNER_POLL="1")
    assert run.wait("a") == 0 and run.wait("b") == 0
    assert run.lock("b")["start_epoch"] >= run.lock("a")["end_epoch"]
    assert "polling" in run.stderr("b") and "inotify" not in run.stderr("b")


# -- waiting that ends without running -----------------------------------------------


def test_timeout_names_missing_locks_and_exits_113(run):
    (run.locks).mkdir(parents=True)
    (run.locks / "a.lock").write_text("")  # hand-made empty lock counts
    t0 = time.monotonic()
    run.start("c", touch_program(_ran(run, "c")), wait="a.lock,b.lock", NVIDIA_CLARA_TIMEOUT="1")
    assert run.wait("c") == EXIT_TIMEOUT
    assert time.monotonic() - t0 >= 1.0
    assert not _ran(run, "c").exists()
    assert "timed out after 1 s waiting for a.lock, b.lock; still missing: b.lock" in run.stderr("c")
    marker = run.marker("c")
    assert marker["status"] == "timeout" and marker["exit_code"] == EXIT_TIMEOUT
    assert marker["program_exit_code"] is None and "b.lock" in marker["message"]
    assert not (run.locks / "c.lock").exists()


def test_upstream_failure_stops_downstream_at_once_in_cascade(run):
    run.start("c", touch_program(_ran(run, "c")), wait="b.lock")
    run.start("b", touch_program(_ran(run, "b")), wait="a.lock")
    run.wait_for_stderr("b", "waiting for a.lock")
    run.start("a", ["sh", "-c", "sleep 0.3; exit 3"], wait="")
    assert run.wait("a") == 3
    assert run.wait("b") == EXIT_UPSTREAM_FAILED
    assert run.wait("c") == EXIT_UPSTREAM_FAILED
    assert not _ran(run, "b").exists() and not _ran(run, "c").exists()

    a, b, c = run.marker("a"), run.marker("b"), run.marker("c")
    assert a["status"] == "failed" and a["exit_code"] == 3 and a["program_exit_code"] == 3
    assert b["status"] == "upstream-failed" and b["failed_stage"] == "a"
    assert c["status"] == "upstream-failed" and c["failed_stage"] == "a"  # the root cause, not b
    # TIMEOUT is 60 s: only the failure marker can have ended these waits this fast.
    assert b["end_epoch"] - a["end_epoch"] < 1.0
    assert c["end_epoch"] - a["end_epoch"] < 1.0
    assert "upstream stage a failed (a.lock.failed: program exited with 3" in run.stderr("b")
    assert "upstream stage a failed (reported by b in b.lock.failed)" in run.stderr("c")


def test_diamond_fails_fast_when_one_branch_fails(run):
    run.start("d", touch_program(_ran(run, "d")), wait="b.lock,c.lock")
    run.start("c", touch_program(_ran(run, "c"), "sleep 20"), wait="a.lock")
    run.start("b", ["sh", "-c", "exit 5"], wait="a.lock")
    run.start("a", ["true"], wait="")
    assert run.wait("d") == EXIT_UPSTREAM_FAILED  # long before C ends
    assert run.procs["c"].poll() is None
    assert run.marker("d")["failed_stage"] == "b" and not _ran(run, "d").exists()


def test_kill_9_of_upstream_runner_ends_downstream_at_its_timeout(run):
    run.start("b", touch_program(_ran(run, "b")), wait="a.lock", NVIDIA_CLARA_TIMEOUT="2")
    run.start("a", ["sleep", "60"], wait="")
    err = run.wait_for_stderr("a", "started sleep 60")
    child_pid = int(err.split("(pid ")[1].split(")")[0])
    run.procs["a"].send_signal(signal.SIGKILL)
    assert run.wait("b") == EXIT_TIMEOUT
    assert not _ran(run, "b").exists()
    assert "timed out after 2 s waiting for a.lock; still missing: a.lock" in run.stderr("b")
    assert not (run.locks / "a.lock").exists() and not (run.locks / "a.lock.failed").exists()
    # The program has its own process group in its runner's session, so a launcher that
    # ends the session leaves nothing behind (the local engine does; a pod ends with PID 1).
    assert _alive(child_pid) and os.getsid(child_pid) == run.procs["a"].pid
    assert os.getpgid(child_pid) == child_pid
    assert child_pid in procs.kill_session(run.procs["a"].pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child_pid):
        time.sleep(0.05)
    assert not _alive(child_pid)


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_stale_lock_from_another_job_never_lets_a_stage_run(run):
    run.locks.mkdir(parents=True)
    (run.locks / "a.lock").write_text(json.dumps({"job_id": "another-job", "status": "succeeded"}))
    run.start("b", touch_program(_ran(run, "b")), wait="a.lock", NVIDIA_CLARA_TIMEOUT="1")
    assert run.wait("b") == EXIT_TIMEOUT
    assert not _ran(run, "b").exists()
    assert "left by another job id" in run.stderr("b")


# -- signals -------------------------------------------------------------------------

TRAP_TERM = textwrap.dedent("""
    import signal, sys, time, pathlib
    def on_term(signum, frame):
        pathlib.Path("got-signal").write_text(signal.Signals(signum).name)
        sys.exit(42)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    pathlib.Path("ready").write_text("")
    time.sleep(60)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_is_forwarded_and_program_exit_code_kept(run, sig):
    run.start("a", [PY, "-c", TRAP_TERM], wait="")
    _wait_for_file(run.app / "ready")
    run.procs["a"].send_signal(sig)
    assert run.wait("a") == 42
    assert (run.app / "got-signal").read_text() == sig.name  # cwd was APPDIR
    marker = run.marker("a")
    assert marker["status"] == "failed" and marker["exit_code"] == 42


def test_program_killed_by_forwarded_sigterm_exits_143(run):
    run.start("a", ["sleep", "60"], wait="")
    run.wait_for_stderr("a", "started sleep 60")
    run.procs["a"].send_signal(signal.SIGTERM)
    assert run.wait("a") == 128 + signal.SIGTERM
    assert run.marker("a")["program_exit_code"] == -signal.SIGTERM
    assert "program killed by SIGTERM" in run.stderr("a")


def test_sigterm_while_waiting_ends_the_wait_without_running(run):
    run.start("b", touch_program(_ran(run, "b")), wait="a.lock")
    run.wait_for_stderr("b", "waiting for a.lock")
    run.procs["b"].send_signal(signal.SIGTERM)
    assert run.wait("b") == 128 + signal.SIGTERM
    assert not _ran(run, "b").exists()
    assert run.marker("b")["status"] == "terminated"


def _wait_for_file(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "%s never appeared" % path
        time.sleep(0.01)


# -- NOSYNCLOCK, RUNSIMPLE and INPUTLOCK ----------------------------------------------


def test_nosynclock_runs_at_once(run):
    run.start("b", touch_program(_ran(run, "b")), wait="never.lock", NVIDIA_CLARA_NOSYNCLOCK="TRUE",
              NVIDIA_CLARA_RUNSIMPLE="FALSE")
    assert run.wait("b") == 0 and _ran(run, "b").exists()
    assert "NOSYNCLOCK=TRUE: not waiting" in run.stderr("b")
    assert run.lock("b")["status"] == "succeeded"


def test_nosynclock_stand_alone_needs_no_lock_variables(run):
    env = clean_env()
    env.update(NVIDIA_CLARA_NOSYNCLOCK="true", NVIDIA_CLARA_APPDIR=str(run.app))
    run.start("solo", touch_program(_ran(run, "solo")), env=env)
    assert run.wait("solo") == 0 and _ran(run, "solo").exists()
    assert "no lock to write" in run.stderr("solo")


def test_first_stage_waits_for_inputlock_unless_runsimple(run):
    run.start("a", touch_program(_ran(run, "a")), wait="", NVIDIA_CLARA_RUNSIMPLE="FALSE")
    run.wait_for_stderr("a", "waiting for %s" % (run.locks / "input.lock"))
    time.sleep(0.3)
    assert run.procs["a"].poll() is None and not _ran(run, "a").exists()
    (run.locks / "input.lock").write_text("")  # the platform: payload complete
    assert run.wait("a") == 0 and _ran(run, "a").exists()


def test_stage_with_upstream_does_not_wait_for_inputlock(run):
    run.locks.mkdir(parents=True)
    (run.locks / "a.lock").write_text("{}")
    run.start("b", touch_program(_ran(run, "b")), wait="a.lock", NVIDIA_CLARA_RUNSIMPLE="FALSE",
              NVIDIA_CLARA_TIMEOUT="5")
    assert run.wait("b") == 0


def test_runsimple_first_stage_ignores_inputlock(run):
    run.start("a", touch_program(_ran(run, "a")), wait="", NVIDIA_CLARA_RUNSIMPLE="TRUE")
    assert run.wait("a") == 0 and not (run.locks / "input.lock").exists()


# -- configuration and start errors ----------------------------------------------------


@pytest.mark.parametrize("variable,value,message", [
    ("NVIDIA_CLARA_LOCKDIR", "relative/locks", "NVIDIA_CLARA_LOCKDIR must be an absolute path, got 'relative/locks'"),
    ("NVIDIA_CLARA_LOGNAME", "logs/a.log", "NVIDIA_CLARA_LOGNAME must be an absolute path"),
    ("NVIDIA_CLARA_INPUTLOCK", "locks/input.lock", "NVIDIA_CLARA_INPUTLOCK must be an absolute path"),
    ("NVIDIA_CLARA_APPDIR", "app", "NVIDIA_CLARA_APPDIR must be an absolute path"),
    ("NVIDIA_CLARA_TIMEOUT", "5m", "NVIDIA_CLARA_TIMEOUT must be a number of seconds >= 0 (0 = no limit), got '5m'"),
    ("NVIDIA_CLARA_TIMEOUT", "-1", "NVIDIA_CLARA_TIMEOUT must be a number"),
    ("NVIDIA_CLARA_TIMEOUT", "nan", "NVIDIA_CLARA_TIMEOUT must be a number"),
    ("NVIDIA_CLARA_RUNSIMPLE", "yes", "NVIDIA_CLARA_RUNSIMPLE must be TRUE or FALSE, got 'yes'"),
    ("NVIDIA_CLARA_NOSYNCLOCK", "1", "NVIDIA_CLARA_NOSYNCLOCK must be TRUE or FALSE"),
    ("NVIDIA_CLARA_LOCKNAME", "x/a.lock", "NVIDIA_CLARA_LOCKNAME must be a file name inside LOCKDIR"),
    ("NVIDIA_CLARA_LOCKNAME", "a.lock.failed", "reserved for failure markers"),
    ("NVIDIA_CLARA_WAITNAME", "../up.lock", "must be a file name inside LOCKDIR"),
    ("NVIDIA_CLARA_WAITNAME", "z.lock,a.lock", "names the stage's own lock 'a.lock'"),
    ("NVIDIA_CLARA_WAITNAME", None, "NVIDIA_CLARA_WAITNAME is not set"),
    ("NVIDIA_CLARA_STAGENAME", None, "NVIDIA_CLARA_STAGENAME is not set"),
    ("NVIDIA_CLARA_LOCKDIR", None, "NVIDIA_CLARA_LOCKDIR is not set"),
    ("CLARA_WF_RUNNER_POLL", "yes", "CLARA_WF_RUNNER_POLL must be 1"),
])
def test_bad_variable_is_reported_before_anything_runs(run, variable, value, message):
    env = run.env("a", wait="")
    if value is None:
        del env[variable]
    else:
        env[variable] = value
    run.start("a", touch_program(_ran(run, "a")), env=env)
    assert run.wait("a") == EXIT_CONFIG
    assert message in run.stderr("a")
    assert not _ran(run, "a").exists()
    for line in run.stderr("a").splitlines():
        assert line.startswith("[clara-wf-stage ")


def test_missing_inputlock_when_needed_is_a_config_error(run):
    run.start("a", touch_program(_ran(run, "a")), wait="", NVIDIA_CLARA_RUNSIMPLE="FALSE",
              NVIDIA_CLARA_INPUTLOCK=None)
    assert run.wait("a") == EXIT_CONFIG
    assert "NVIDIA_CLARA_INPUTLOCK is not set" in run.stderr("a")
    # LOCKDIR and LOCKNAME were fine: a marker tells downstream stages at once.
    assert run.marker("a")["status"] == "config-error"


def test_several_problems_are_all_reported(run):
    run.start("a", touch_program(_ran(run, "a")), wait="", NVIDIA_CLARA_TIMEOUT="x",
              NVIDIA_CLARA_LOGNAME="rel.log")
    assert run.wait("a") == EXIT_CONFIG
    err = run.stderr("a")
    assert "NVIDIA_CLARA_TIMEOUT" in err and "NVIDIA_CLARA_LOGNAME" in err


def test_folders_are_created_when_missing(run):
    deep = run.root / "x" / "y"
    run.start("a", touch_program(_ran(run, "a")), wait="", NVIDIA_CLARA_LOCKDIR=str(deep / "locks"),
              NVIDIA_CLARA_LOGNAME=str(deep / "logs" / "sub" / "a.log"))
    assert run.wait("a") == 0
    assert (deep / "locks" / "a.lock").is_file() and (deep / "logs" / "sub" / "a.log").is_file()


def test_no_program_is_a_config_error(run):
    run.start("a", [], wait="")
    assert run.wait("a") == EXIT_CONFIG
    assert "no program given" in run.stderr("a")


def test_program_that_cannot_start_exits_115_and_stops_downstream(run):
    run.start("b", touch_program(_ran(run, "b")), wait="a.lock")
    run.start("a", ["/nonexistent/program", "x"], wait="")
    assert run.wait("a") == EXIT_START_FAILED
    assert "cannot start /nonexistent/program x" in run.stderr("a")
    assert run.marker("a")["status"] == "start-failed"
    assert run.wait("b") == EXIT_UPSTREAM_FAILED


def test_program_exit_code_is_the_runners(run):
    run.start("a", ["sh", "-c", "exit 7"], wait="")
    assert run.wait("a") == 7
    assert run.marker("a")["exit_code"] == 7 and not (run.locks / "a.lock").exists()


def test_console_entry_without_double_dash_and_help(run):
    code = "import sys; from clara_wf.runner import main; sys.exit(main())"
    run.start("a", touch_program(_ran(run, "a")), wait="", runner=[PY, "-c", code])
    assert run.wait("a") == 0 and _ran(run, "a").exists()
    out = subprocess.run([PY, "-m", "clara_wf.runner", "--help"], env=clean_env(), capture_output=True, text=True)
    assert out.returncode == 0 and "usage: clara-wf-stage" in out.stdout


def test_rerun_removes_the_stages_own_leftovers(run):
    run.locks.mkdir(parents=True)
    (run.locks / "a.lock.failed").write_text("{}")
    run.start("a", ["true"], wait="")
    assert run.wait("a") == 0
    assert (run.locks / "a.lock").exists() and not (run.locks / "a.lock.failed").exists()


# -- check(): the rules of one look --------------------------------------------------


def test_check_failure_marker_wins_and_stale_markers_are_ignored(tmp_path):
    a = WaitTarget("a.lock", str(tmp_path / "a.lock"), str(tmp_path / "a.lock.failed"), True)
    b = WaitTarget("b.lock", str(tmp_path / "b.lock"), str(tmp_path / "b.lock.failed"), True)
    assert check([a, b], "job").missing == ["a.lock", "b.lock"]
    (tmp_path / "a.lock").write_text(json.dumps({"job_id": "job"}))
    (tmp_path / "b.lock.failed").write_text(json.dumps({"job_id": "old-job"}))
    assert check([a, b], "job").missing == ["b.lock"]  # stale marker: still just missing
    (tmp_path / "b.lock.failed").write_text("not json")
    result = check([a, b], "job")
    assert result.outcome == FAILED and result.failed == b
    (tmp_path / "b.lock.failed").unlink()
    (tmp_path / "b.lock").write_text("")
    assert check([a, b], "job").outcome == READY


# -- the driver ----------------------------------------------------------------------

DRIVER = textwrap.dedent("""
    import pathlib, sys, time
    from clara_wf.runner import Driver
    mode = sys.argv[1]
    log = pathlib.Path("calls")
    def note(what):
        with log.open("a") as f:
            f.write("%s %.6f\\n" % (what, time.time()))
    def prepare(driver, payload):
        note("prepare")
        pathlib.Path("prepared").write_text("")
    def execute(driver, payload):
        note("execute " + driver.stage_name + " " + payload.input_entries[0].path)
        if mode == "false":
            return False
        if mode == "raise":
            raise RuntimeError("model not found")
    def cleanup(driver, payload):
        note("cleanup")
    Driver(execute, prepare=prepare, cleanup=cleanup).main()
""")


def test_driver_prepares_before_inputs_are_ready_then_executes(run):
    run.start("b", [], wait="a.lock", runner=[PY, "-c", DRIVER, "ok"])
    _wait_for_file(run.app / "prepared")
    assert run.procs["b"].poll() is None  # prepared, now waiting
    run.start("a", ["true"], wait="")
    assert run.wait("a") == 0 and run.wait("b") == 0
    calls = (run.app / "calls").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["prepare", "execute", "cleanup"]
    assert calls[1].split()[1:3] == ["b", str(run.app / "input" / "recon.mhd")]
    assert float(calls[1].split()[-1]) >= run.lock("a")["end_epoch"]
    assert run.lock("b")["status"] == "succeeded"


@pytest.mark.parametrize("mode,message", [("false", "execute() returned False"),
                                          ("raise", "execute() raised RuntimeError: model not found")])
def test_driver_failure_writes_the_marker_and_stops_downstream(run, mode, message):
    run.start("c", touch_program(_ran(run, "c")), wait="b.lock")
    run.start("b", [], wait="", runner=[PY, "-c", DRIVER, mode])
    assert run.wait("b") == 1
    assert message in run.stderr("b")
    assert [c.split()[0] for c in (run.app / "calls").read_text().splitlines()] == ["prepare", "execute", "cleanup"]
    assert run.marker("b")["status"] == "failed"
    assert run.wait("c") == EXIT_UPSTREAM_FAILED and not _ran(run, "c").exists()
    if mode == "raise":
        assert "Traceback" in run.stderr("b") and "Traceback" in (run.logs / "b.log").read_text()


def test_driver_malformed_payload_variable_is_a_config_error(run):
    run.start("b", [], wait="", runner=[PY, "-c", DRIVER, "ok"], NVIDIA_CLARA_INPUTPATHS="payload=/input")
    assert run.wait("b") == EXIT_CONFIG
    assert "NVIDIA_CLARA_INPUTPATHS: entry 'payload=/input' has no ':'" in run.stderr("b")
    assert not (run.app / "calls").exists()


# -- standard library only, Python 3.8 -------------------------------------------------

ISOLATED = textwrap.dedent("""
    import sys
    sys.path[:] = [p for p in sys.path if p.startswith(sys.base_prefix) and "-packages" not in p]
    sys.path.insert(0, sys.argv.pop(1))
    try:
        import typer  # installed in the test venv: must be out of reach here
    except ImportError:
        pass
    else:
        raise SystemExit("site-packages still reachable")
    import clara_wf.runner, clara_wf.payload
    outside = [m.__name__ for m in list(sys.modules.values())
               if "-packages" in (getattr(m, "__file__", None) or "")]
    assert not outside, outside
    sys.exit(clara_wf.runner.main(sys.argv[1:]))
""")


def _isolated_runner(python: str):
    # -S: no site module (no site-packages); -I: no PYTHON* variables, no user site, no cwd.
    return [python, "-S", "-I", "-c", ISOLATED, str(REPO), "--"]


def test_runner_imports_and_runs_with_the_standard_library_only(run):
    env = run.env("b", wait="a.lock")
    env.pop("PYTHONPATH")
    run.start("b", touch_program(_ran(run, "b")), env=env, runner=_isolated_runner(PY))
    env = run.env("a", wait="")
    env.pop("PYTHONPATH")
    run.start("a", ["sh", "-c", "sleep 0.2"], env=env, runner=_isolated_runner(PY))
    assert run.wait("a") == 0, run.stderr("a")
    assert run.wait("b") == 0, run.stderr("b")
    assert _ran(run, "b").exists()


@pytest.mark.skipif(not PY38.exists(), reason="no Python 3.8 interpreter on this machine")
def test_runner_chain_on_python_3_8(run):
    run.start("b", touch_program(_ran(run, "b")), wait="a.lock", runner=_isolated_runner(str(PY38)),
              PYTHONPATH=None)
    run.start("a", ["true"], wait="", runner=_isolated_runner(str(PY38)), PYTHONPATH=None)
    assert run.wait("a") == 0, run.stderr("a")
    assert run.wait("b") == 0, run.stderr("b")
    assert run.lock("b")["start_epoch"] >= run.lock("a")["end_epoch"]


def test_sources_parse_as_python_3_8():
    files = sorted((REPO / "clara_wf" / "runner").glob("*.py")) + [REPO / "clara_wf" / "payload.py",
                                                                 REPO / "clara_wf" / "__init__.py"]
    for path in files:
        ast.parse(path.read_text(), str(path), feature_version=(3, 8))
