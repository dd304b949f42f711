"""``clara-wf-stage -- PROGRAM ARGS...``: wait, run the stage's program, leave a lock."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, List, Mapping, Optional, Sequence

from clara_wf.runner.config import ConfigError, load_config, var
from clara_wf.runner.protocol import (
    EXIT_CONFIG,
    EXIT_SIGNAL_BASE,
    EXIT_START_FAILED,
    POLL_ENV,
    STATUS_FAILED,
    STATUS_START_FAILED,
)
from clara_wf.runner.session import StageSession, report_config_error, write_all

USAGE = """\
usage: clara-wf-stage [--] PROGRAM [ARGS...]
       python -m clara_wf.runner -- PROGRAM [ARGS...]

Waits for the stage's upstream locks, runs PROGRAM in NVIDIA_CLARA_APPDIR, then writes
NVIDIA_CLARA_LOCKNAME (or a failure marker) in NVIDIA_CLARA_LOCKDIR.
Protocol, variables and exit codes: docs/lock-protocol.md. %s=1 forces polling.
""" % POLL_ENV

TEE_DRAIN_S = 5.0  # how long output may still flow after the program exits (grandchildren)


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
        return _run_program(session, argv)
    finally:
        session.restore_signal_handlers()
        session.close()


def _run_program(session: StageSession, argv: List[str]) -> int:
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
            # Same process group as the runner (no preexec_fn, no new session): Popen
            # stays on the fast vfork path, and a launcher that kills the runner's group
            # also ends the program, even after a kill -9 of the runner.
        )
    except (OSError, subprocess.SubprocessError) as e:
        for fd in [p[0] for p in pipes] + [stdout, stderr]:
            if fd is not None:
                os.close(fd)
        reason = getattr(e, "strerror", None) or str(e)
        message = "cannot start %s in %s: %s" % (command, cwd, reason)
        session.status(message)
        return session.fail(STATUS_START_FAILED, EXIT_START_FAILED, message)
    start_epoch = time.time()
    started = time.monotonic()
    session.child_pid = proc.pid
    if session.signum is not None:
        # A signal that came while Popen ran found no child to forward to.
        _kill(proc.pid, session.signum)
    for fd in (stdout, stderr):
        if fd is not None:
            os.close(fd)
    ready = session.ready_note + "; " if session.ready_note else ""
    session.status("%sstarted %s in %s (pid %d)" % (ready, command, cwd, proc.pid))
    threads = [threading.Thread(target=_tee, args=(r, dst, session.log), daemon=True) for r, dst in pipes]
    for t in threads:
        t.start()
    rc = proc.wait()
    session.child_pid = None  # reaped: its pid may be reused, forward nothing more
    for t in threads:
        t.join(TEE_DRAIN_S)
    elapsed = time.monotonic() - started
    if rc == 0:
        return session.succeed(start_epoch, "program exited with 0 after %.3f s" % elapsed)
    if rc < 0:
        code = EXIT_SIGNAL_BASE - rc
        message = "program killed by %s after %.3f s" % (_signame(-rc), elapsed)
    else:
        code = rc
        message = "program exited with %d after %.3f s" % (rc, elapsed)
    session.status(message)
    return session.fail(STATUS_FAILED, code, message, program_exit_code=rc, start_epoch=start_epoch)


def _command(argv: List[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def _tee(src: int, dst: int, log: Callable[[bytes], None]) -> None:
    """Copy the program's stream to the container's stream and to the log, as it comes."""
    try:
        while True:
            try:
                data = os.read(src, 65536)
            except InterruptedError:
                continue
            except OSError:
                return
            if not data:
                return
            write_all(dst, data)
            log(data)
    finally:
        os.close(src)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum


__all__ = ["main", "run_stage", "USAGE"]
