"""Helpers for the stage runner tests: start real runner processes on real lock folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
# Generous: the machine may be busy with other test runs.
PROCESS_DEADLINE_S = 30.0


def clean_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVIDIA_CLARA_") and k != "CLARA_WF_RUNNER_POLL"}
    env["PYTHONPATH"] = str(REPO)
    return env


class Run:
    """A run's folders: app dir with locks/ and logs/ under it, as the chart lays them out."""

    def __init__(self, root: Path, job_id: str = "11111111-2222-3333-4444-555555555555"):
        self.root = root
        self.app = root / "app"
        self.app.mkdir(parents=True, exist_ok=True)
        self.locks = self.app / "locks"
        self.logs = self.app / "logs"
        self.job_id = job_id
        self.procs: Dict[str, subprocess.Popen] = {}

    def env(self, stage: str, wait: Optional[str] = "", **extra: str) -> Dict[str, str]:
        env = clean_env()
        env.update(
            NVIDIA_CLARA_STAGENAME=stage,
            NVIDIA_CLARA_APPDIR=str(self.app),
            NVIDIA_CLARA_LOCKDIR=str(self.locks),
            NVIDIA_CLARA_LOCKNAME=stage + ".lock",
            NVIDIA_CLARA_INPUTLOCK=str(self.locks / "input.lock"),
            NVIDIA_CLARA_RUNSIMPLE="TRUE",
            NVIDIA_CLARA_TIMEOUT="60",
            NVIDIA_CLARA_LOGNAME=str(self.logs / (stage + ".log")),
            NVIDIA_CLARA_INPUTS="input/recon.mhd",
            NVIDIA_CLARA_OUTPUTS="output/recon.seg.mhd",
            NVIDIA_CLARA_JOBID=self.job_id,
            NVIDIA_CLARA_JOBNAME="test-job",
            NVIDIA_CLARA_TRTISURI="localhost:8000",
        )
        if wait is not None:
            env["NVIDIA_CLARA_WAITNAME"] = wait
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def start(self, stage: str, program: Sequence[str], wait: Optional[str] = "", runner: Optional[List[str]] = None,
              env: Optional[Dict[str, str]] = None, **extra: str) -> subprocess.Popen:
        """Start ``python -m clara_wf.runner -- program`` with stdout/stderr in files."""
        cmd = (runner or [PY, "-m", "clara_wf.runner", "--"]) + list(program)
        out = open(self.root / (stage + ".out"), "wb")
        err = open(self.root / (stage + ".err"), "wb")
        # Its own process group, as a launcher starts runners: kill_all() can then end
        # programs whose runner was killed with SIGKILL.
        proc = subprocess.Popen(cmd, env=env or self.env(stage, wait, **extra), stdout=out, stderr=err,
                                cwd=str(self.root), start_new_session=True)
        out.close()
        err.close()
        self.procs[stage] = proc
        return proc

    def wait(self, stage: str, timeout: float = PROCESS_DEADLINE_S) -> int:
        return self.procs[stage].wait(timeout)

    def stderr(self, stage: str) -> str:
        return (self.root / (stage + ".err")).read_text()

    def stdout(self, stage: str) -> str:
        return (self.root / (stage + ".out")).read_text()

    def wait_for_stderr(self, stage: str, text: str, timeout: float = PROCESS_DEADLINE_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.stderr(stage)
            if text in got:
                return got
            if self.procs[stage].poll() is not None:
                got = self.stderr(stage)
                if text in got:
                    return got
                raise AssertionError("%s exited %s without printing %r:\n%s" % (
                    stage, self.procs[stage].returncode, text, got))
            time.sleep(0.01)
        raise AssertionError("%s did not print %r within %s s:\n%s" % (stage, text, timeout, self.stderr(stage)))

    def lock(self, stage: str) -> dict:
        return json.loads((self.locks / (stage + ".lock")).read_text())

    def marker(self, stage: str) -> dict:
        return json.loads((self.locks / (stage + ".lock.failed")).read_text())

    def kill_all(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()


def touch_program(path: Path, then: str = "") -> List[str]:
    """A program that records that it ran (and when), then runs shell ``then``."""
    return ["sh", "-c", 'date +%%s.%%N > "%s"; %s' % (path, then or "true")]
