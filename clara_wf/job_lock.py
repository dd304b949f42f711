"""One run per job at a time, whatever the engine: a lock file per job in the project's state folder."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from clara_wf.errors import InputError


def _jobs_dir(state_dir: Path) -> Path:
    return state_dir / "jobs"


@contextlib.contextmanager
def job_lock(state_dir: Path, job_id: str) -> Iterator[None]:
    """Held for a whole run: a second run on the same job is refused at once."""
    folder = _jobs_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{job_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise InputError(f"job {job_id} is already running (clara-wf pid {holder}); wait for it or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def other_jobs_running(state_dir: Path, job_id: str) -> bool:
    """Does a run of another job hold its lock right now?"""
    for lock in _jobs_dir(state_dir).glob("*.lock"):
        if lock.stem == job_id:
            continue
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
    return False
