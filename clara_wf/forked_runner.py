"""Stage runners forked from clara-wf itself: no interpreter start per stage.

A runner started as ``python -S -m clara_wf.runner -- PROGRAM`` costs an interpreter
start (~20-40 ms of CPU each; ten of them on two cores are most of a no-op workflow's
overhead). clara-wf has the runner's modules imported already, so the local engine
forks a child that becomes exactly that process: its own session, PR_SET_PDEATHSIG,
stdin from /dev/null, stdout/stderr to pipes, the stage's working folder and
environment, no other descriptor, default signal dispositions; then it runs
``clara_wf.runner.stage.run_stage`` and leaves with ``os._exit``. The behaviour is the
runner's (same code, same variables, same exit codes); only the start is cheaper.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Dict, List, Optional

from clara_wf.runner import procs

PR_SET_PDEATHSIG = 1
_RESET = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD, signal.SIGALRM)


def runner_program(argv: List[str]) -> Optional[List[str]]:
    """The program after ``--`` when ``argv`` runs the stage runner with this interpreter."""
    if argv[:1] == [sys.executable] and "-m" in argv[1:4]:
        i = argv.index("-m")
        if argv[i + 1:i + 2] == ["clara_wf.runner"]:
            rest = argv[i + 2:]
            return rest[1:] if rest[:1] == ["--"] else rest
    return None


class ForkedRunner:
    """The part of ``subprocess.Popen`` the local engine uses, for a forked runner."""

    def __init__(self, program: List[str], env: Dict[str, str], cwd: Optional[Path]):
        from clara_wf.runner import stage

        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY)
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.setsid()
                procs.set_parent_death_signal(signal.SIGTERM)
                if os.getppid() != parent:
                    os._exit(128 + signal.SIGTERM)  # clara-wf ended before the signal was set
                os.dup2(null, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                os.closerange(3, 1 << 16)
                for sig in _RESET:
                    signal.signal(sig, signal.SIG_DFL)
                if cwd is not None:
                    os.chdir(cwd)
                os.environ.clear()
                os.environ.update(env)
                code = stage.run_stage(program, os.environ)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(out_w)
        os.close(err_w)
        os.close(null)
        self.pid = pid
        self.args = program
        self.returncode: Optional[int] = None
        self.stdout = os.fdopen(out_r, "rb")
        self.stderr = os.fdopen(err_r, "rb")

    def _status(self, flags: int) -> Optional[int]:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:
                self.returncode = 0 if self.returncode is None else self.returncode
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> Optional[int]:
        return self._status(os.WNOHANG)

    def wait(self, timeout: Optional[float] = None) -> int:
        import subprocess
        import time

        if timeout is None:
            code = self._status(0)
            assert code is not None
            return code
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.005)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
