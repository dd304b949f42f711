"""One run per job at a time, whatever the engine: a lock file per job in the project's state folder."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from clara_wf import fsio
from clara_wf.errors import InputError


def _jobs_dir(state_dir: Path) -> Path:
    return state_dir / "jobs"


@contextlib.contextmanager
def job_lock(state_dir: Path, job_id: str) -> Iterator[None]:
    """Held for a whole run: a second run on the same job is refused at once."""
    folder = _jobs_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{job_id}.lock"
    with contextlib.ExitStack() as stack:
        try:
            fd = stack.enter_context(fsio.lock(path, create=True, blocking=False))
        except BlockingIOError:
            holder = path.read_text(errors="replace").strip() or "?"
            raise InputError(f"job {job_id} is already running (clara-wf pid {holder}); "
                             "wait for it or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield


def other_jobs_running(state_dir: Path, job_id: str) -> bool:
    """Does a run of another job hold its lock right now?"""
    for lock in _jobs_dir(state_dir).glob("*.lock"):
        if lock.stem == job_id:
            continue
        try:
            with fsio.lock(lock, shared=True, blocking=False):
                pass
        except BlockingIOError:
            return True
        except FileNotFoundError:
            continue
    return False
