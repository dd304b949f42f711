"""`clara-wf test --pause-before STAGE` / `--pause-after STAGE`: hold a local run there.

Like Argo's debug pause (argo#6868), built on the lock protocol itself: a paused stage
waits for one more lock, ``<stage>.pause.lock`` in its LOCKDIR (added to its
NVIDIA_CLARA_WAITNAME; its own wait timeout is lifted), which clara-wf writes when the
user continues — Enter on the terminal running `clara-wf test`, or creating the file the
message names (for a run without a terminal). ``--pause-after X`` pauses the stages that
wait for X's lock; when none does, clara-wf holds the end of the run instead (X's output
is complete then). Meanwhile ``clara-wf shell STAGE WORKFLOW JOB`` opens a shell in the
paused stage's environment.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from clara_wf.errors import InputError
from clara_wf.events import Info
from clara_wf.runner import protocol

POLL_S = 0.1
PAUSE_SUFFIX = ".pause.lock"


@dataclass
class Pause:
    stage: str  # the stage held (it waits for the pause lock); "" = the end of the run
    why: str  # "before X" / "after X"
    lock: Optional[Path]  # the pause lock to write on continue (None: the end of the run)
    ready: Callable[[], bool]  # the point is reached (announce, then wait for continue)
    continue_file: Path


def plan_pauses(plans: Sequence, before: Sequence[str], after: Sequence[str], job_dir: Path) -> List[Pause]:
    """Add the pause locks to the stages' plans (``StagePlan`` of the local engine) and
    return the pauses in the order they can happen."""
    by_name = {p.name: p for p in plans}
    for name in [*before, *after]:
        if name not in by_name:
            raise InputError(f"cannot pause at {name!r}: the run's stages are {', '.join(by_name)}")
    pauses: List[Pause] = []
    control = job_dir / "pause"

    def hold(plan, why: str) -> None:
        lock = plan.lock_dir / f"{plan.name}{PAUSE_SUFFIX}"
        upstream = [plan.lock_dir / w for w in plan.wait_names]
        plan.wait_names.append(lock.name)
        plan.env["NVIDIA_CLARA_WAITNAME"] = ",".join(plan.wait_names)
        plan.env["NVIDIA_CLARA_TIMEOUT"] = "0"  # a person may take their time
        pauses.append(Pause(plan.name, why, lock, lambda: all(u.exists() for u in upstream),
                            control / f"continue-{plan.name}"))

    for name in before:
        hold(by_name[name], f"before {name}")
    for name in after:
        stage = by_name[name]
        readers = [p for p in plans if stage.lock_name in p.wait_names and p.name not in before]
        for reader in readers:
            hold(reader, f"after {name}")
        if not any(stage.lock_name in p.wait_names for p in plans):
            done = stage.lock_dir / stage.lock_name
            pauses.append(Pause("", f"after {name} (the end of the run)", None, done.exists,
                                control / "continue-end"))
    return pauses


class Pauser:
    """Announces each pause when it is reached and releases it when the user continues."""

    def __init__(self, pauses: List[Pause], job_id: str, on_event: Callable, workflow_id: str = "WORKFLOW") -> None:
        self.pauses = pauses
        self.job_id = job_id
        self.workflow_id = workflow_id
        self.on_event = on_event
        self._stop = threading.Event()
        self._enter = threading.Event()
        self._thread: Optional[threading.Thread] = None
        for pause in pauses:  # left by an earlier run: never let a stage through early
            for stale in (pause.lock, pause.continue_file):
                if stale is not None and stale.exists():
                    stale.unlink()

    def start(self) -> None:
        if not self.pauses:
            return
        if sys.stdin is not None and sys.stdin.isatty():
            threading.Thread(target=self._read_enter, daemon=True).start()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read_enter(self) -> None:
        while not self._stop.is_set():
            if not sys.stdin.readline():
                return
            self._enter.set()

    def _run(self) -> None:
        for pause in (p for p in self.pauses if p.lock is not None):
            if not self._hold(pause):
                return

    def _hold(self, pause: Pause) -> bool:
        while not pause.ready():
            if self._stop.wait(POLL_S):
                return False
        self._enter.clear()
        pause.continue_file.parent.mkdir(parents=True, exist_ok=True)
        self.on_event(Info(f"paused {pause.why}: press Enter here to continue, or create {pause.continue_file}; "
                           f"inspect with `clara-wf shell {pause.stage or 'STAGE'} {self.workflow_id} {self.job_id}`"))
        while not (self._enter.is_set() or pause.continue_file.exists()):
            if self._stop.wait(POLL_S):
                return False
        if pause.lock is not None:
            now = time.time()
            record = protocol.make_record(stage=pause.stage, lock=pause.lock.name, status=protocol.STATUS_SUCCEEDED,
                                          exit_code=0, program_exit_code=None, job_id=self.job_id, job_name="",
                                          start_epoch=now, end_epoch=now, waited_s=None, message="continued")
            protocol.write_record_atomic(str(pause.lock), record)
        self.on_event(Info(f"continuing {pause.why}"))
        return True

    def hold_end(self) -> None:
        """The end-of-run pauses (``--pause-after`` the last stage): held here, in the caller."""
        for pause in (p for p in self.pauses if p.lock is None):
            if pause.ready():
                self._hold(pause)

    def stop(self) -> None:
        self._stop.set()
        for pause in self.pauses:
            if pause.lock is not None:
                try:
                    os.unlink(pause.lock)
                except FileNotFoundError:
                    pass
