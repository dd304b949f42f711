"""``clara-wf-stage -- PROGRAM ARGS...``: wait, run the stage's program, leave a lock."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from clara_wf.runner import procs
from clara_wf.runner.config import ConfigError, load_config, var
from clara_wf.runner.protocol import (
    EXIT_CONFIG,
    EXIT_RUN_TIMEOUT,
    EXIT_SIGNAL_BASE,
    EXIT_START_FAILED,
    POLL_ENV,
    STATUS_FAILED,
    STATUS_RUN_TIMEOUT,
    STATUS_START_FAILED,
    STATUS_SUCCEEDED,
)
from clara_wf.runner.session import StageSession, report_config_error, write_all

USAGE = """\
usage: clara-wf-stage [--] PROGRAM [ARGS...]
       python -m clara_wf.runner -- PROGRAM [ARGS...]

Waits for the stage's upstream locks, runs PROGRAM in NVIDIA_CLARA_APPDIR, then writes
NVIDIA_CLARA_LOCKNAME (or a failure marker) in NVIDIA_CLARA_LOCKDIR.
Protocol, variables and exit codes: docs/lock-protocol.md. %s=1 forces polling.
""" % POLL_ENV

# After the program and its descendants are gone its pipes are at EOF at once; this only
# bounds the wait for a writer the runner could not end (another PID namespace's).
TEE_DRAIN_S = 1.0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    elif args and args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    return run_stage(args, os.environ)


def run_stage(argv: List[str], env: Mapping[str, str]) -> int:
    try:
        cfg = load_config(env)
        if not argv:
            raise ConfigError(["no program given (usage: clara-wf-stage -- PROGRAM ARGS...)"],
                              cfg.stage, cfg.lock_path)
    except ConfigError as err:
        report_config_error(err, env.get(var("JOBID"), ""), env.get(var("JOBNAME"), ""))
        return EXIT_CONFIG
    # Before anything is started: orphans of the program's children come to the runner,
    # which ends them with the stage (procs.py).
    procs.become_subreaper()
    procs.name_process()
    session = StageSession(cfg)
    try:
        try:
            session.open()
        except ConfigError as err:
            report_config_error(err, cfg.job_id, cfg.job_name)
            return EXIT_CONFIG
        session.install_signal_handlers()
        code = session.wait(_command(argv), announce=False)
        if code is not None:
            return code
        return _run_attempts(session, argv)
    finally:
        session.restore_signal_handlers()
        session.close()


class _Attempt:
    """One run of the program: how it ended."""

    def __init__(self, number: int):
        self.number = number
        self.start_epoch = time.time()
        self.rc: Optional[int] = None
        self.run_timed_out = False
        self.elapsed = 0.0
        self.message = ""

    def entry(self, status: str) -> Dict[str, Any]:
        return {
            "attempt": self.number,
            "status": status,
            "program_exit_code": self.rc,
            "start_epoch": self.start_epoch,
            "end_epoch": self.start_epoch + self.elapsed,
            "run_s": round(self.elapsed, 6),
            "message": self.message,
        }


def _run_attempts(session: StageSession, argv: List[str]) -> int:
    """Run the program up to 1 + RETRIES times; the first success (or the last failure) counts."""
    cfg = session.cfg
    total = cfg.retries + 1
    attempt: Optional[_Attempt] = None
    for number in range(1, total + 1):
        if number > 1:
            delay = cfg.retry_backoff * (2 ** (number - 2))
            session.status("retrying in %g s (attempt %d of %d)" % (delay, number, total))
            if not session.pause(delay):
                break  # SIGTERM/SIGINT during the back-off: stop, report the last attempt
        attempt = _Attempt(number)
        code = _run_once(session, argv, attempt, total)
        if code is not None:
            return code  # could not start: retrying would fail the same way
        if attempt.rc == 0 and not attempt.run_timed_out:
            session.attempts.append(attempt.entry(STATUS_SUCCEEDED))
            return session.succeed(attempt.start_epoch, attempt.message)
        status = STATUS_RUN_TIMEOUT if attempt.run_timed_out else STATUS_FAILED
        session.attempts.append(attempt.entry(status))
        if session.signum is not None:
            break  # stopped from outside: not a failure to retry
    assert attempt is not None and attempt.rc is not None
    rc = attempt.rc
    if attempt.run_timed_out:
        status, code = STATUS_RUN_TIMEOUT, EXIT_RUN_TIMEOUT
    else:
        status, code = STATUS_FAILED, (EXIT_SIGNAL_BASE - rc if rc < 0 else rc)
    return session.fail(status, code, attempt.message, program_exit_code=rc, start_epoch=attempt.start_epoch)


def _run_once(session: StageSession, argv: List[str], attempt: _Attempt, total: int) -> Optional[int]:
    """Start the program, wait for it, end what it left behind. None once it ran (see
    ``attempt``); the exit code when it could not start (marker written)."""
    cfg = session.cfg
    cwd = cfg.app_dir or os.getcwd()
    command = _command(argv)
    pipes = []  # (read end, container stream) pairs to tee into the log
    stdout = stderr = None
    if session.log_fd is not None:
        out_r, stdout = os.pipe()
        err_r, stderr = os.pipe()
        pipes = [(out_r, 1), (err_r, 2)]
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            close_fds=True,
            # Its own process group, so that a run timeout or a forwarded signal reaches
            # the program and its children, not the runner (no preexec_fn: Popen stays on
            # the fast vfork path).
            **_NEW_GROUP,
        )
    except (OSError, subprocess.SubprocessError) as e:
        for fd in [p[0] for p in pipes] + [stdout, stderr]:
            if fd is not None:
                os.close(fd)
        reason = getattr(e, "strerror", None) or str(e)
        message = "cannot start %s in %s: %s" % (command, cwd, reason)
        session.status(message)
        return session.fail(STATUS_START_FAILED, EXIT_START_FAILED, message)
    attempt.start_epoch = time.time()
    started = time.monotonic()
    session.child_pid = proc.pid
    if session.signum is not None:
        # A signal that came while Popen ran found no child to forward to.
        session.forward(session.signum)
    for fd in (stdout, stderr):
        if fd is not None:
            os.close(fd)
    ready = session.ready_note + "; " if session.ready_note and attempt.number == 1 else ""
    of = " (attempt %d of %d)" % (attempt.number, total) if total > 1 else ""
    session.status("%sstarted %s in %s (pid %d)%s" % (ready, command, cwd, proc.pid, of))
    threads = [threading.Thread(target=_tee, args=(r, dst, session.log_stamped), daemon=True) for r, dst in pipes]
    for t in threads:
        t.start()
    timer = None
    if cfg.run_timeout > 0:
        def run_timeout() -> None:
            if session.child_pid is None:
                return
            attempt.run_timed_out = True
            session.status("run timeout: the program ran past %g s; sending SIGTERM to its process group" % cfg.run_timeout)
            session.forward(signal.SIGTERM)

        timer = threading.Timer(cfg.run_timeout, run_timeout)
        timer.daemon = True
        timer.start()
    rc = proc.wait()
    session.child_pid = None  # reaped: its pid may be reused, forward nothing more
    if timer is not None:
        timer.cancel()
    session.cancel_kill()
    attempt.elapsed = time.monotonic() - started
    attempt.rc = rc
    # What the program left running ends with it (the subreaper collected the orphans).
    left = procs.end_descendants(cfg.stop_grace) if procs.has_children() else []
    for t in threads:
        t.join(TEE_DRAIN_S)
    if left:
        session.status("ended %d process%s the program left running (pid %s)" % (
            len(left), "es" if len(left) > 1 else "", ", ".join(str(p) for p in left)))
    if rc == 0 and not attempt.run_timed_out:
        attempt.message = "program exited with 0 after %.3f s" % attempt.elapsed
        return None
    if attempt.run_timed_out:
        how = "exited with %d" % rc if rc >= 0 else "killed by %s" % _signame(-rc)
        attempt.message = "program stopped by its run timeout (%s = %g s): %s after %.3f s" % (
            var("RUNTIMEOUT"), cfg.run_timeout, how, attempt.elapsed)
    elif rc < 0:
        attempt.message = "program killed by %s after %.3f s" % (_signame(-rc), attempt.elapsed)
    else:
        attempt.message = "program exited with %d after %.3f s" % (rc, attempt.elapsed)
    session.status(attempt.message)
    return None


# Python 3.11+ has process_group (setpgid in the vforked child); before, preexec_fn does
# it (slower fork path). Not a new session: a launcher finds the program through the
# runner's session even after a SIGKILL of the runner (procs.kill_session).
_NEW_GROUP: Dict[str, Any] = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}


def _command(argv: List[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def _tee(src: int, dst: int, log: Callable[[List[bytes]], None]) -> None:
    """Copy the program's stream to the container's stream as it comes, and to the log line
    by line (``log`` stamps each line with the time)."""
    partial = b""
    try:
        while True:
            try:
                data = os.read(src, 65536)
            except InterruptedError:
                continue
            except OSError:
                break
            if not data:
                break
            write_all(dst, data)
            lines = (partial + data).split(b"\n")
            partial = lines.pop()
            if len(partial) > 65536:  # a very long line without an end: log what came
                lines.append(partial)
                partial = b""
            if lines:
                log(lines)
    finally:
        if partial:
            log([partial])
        os.close(src)


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum


__all__ = ["main", "run_stage", "USAGE"]
