"""Waiting for lock files: inotify where it works, adaptive polling otherwise.

The wait ends when every target exists (ready), when an awaited stage's failure marker
appears (failed), at the deadline (timeout) or when the wake descriptor becomes readable
(a signal reached the runner). Never a fixed one-second sleep.
"""

from __future__ import annotations

import os
import select
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from clara_wf.runner.config import WaitTarget
from clara_wf.runner.inotify import Inotify
from clara_wf.runner.protocol import read_record

POLL_FIRST_S = 0.001  # a lock that comes at once is seen within ~1 ms
POLL_MAX_S = 0.010  # long waits settle at 100 checks a second: p50 hand-off ~5 ms
POLL_BACKOFF = 1.5

READY = "ready"
FAILED = "failed"
TIMEOUT = "timeout"
INTERRUPTED = "interrupted"
GONE = "gone"  # the folder of a target was deleted or moved away


class WaitResult(NamedTuple):
    outcome: str
    missing: List[str]  # labels still missing (timeout, interrupted)
    failed: Optional[WaitTarget] = None  # the target whose failure marker appeared
    failed_record: Optional[Dict[str, Any]] = None
    stale: Tuple[str, ...] = ()  # labels whose file belongs to another job id


def _job_matches(record: Dict[str, Any], job_id: str) -> bool:
    other = record.get("job_id")
    return not (job_id and isinstance(other, str) and other and other != job_id)


def check(targets: List[WaitTarget], job_id: str) -> WaitResult:
    """One look at the files. A failure marker anywhere wins over missing locks."""
    for t in targets:
        if t.failed_path is not None:
            record = read_record(t.failed_path)
            if record is not None and _job_matches(record, job_id):
                return WaitResult(FAILED, [], t, record)
    missing = []
    stale = []
    for t in targets:
        if not t.check_job:
            if not os.path.lexists(t.path):
                missing.append(t.label)
                if not os.path.isdir(os.path.dirname(t.path)):
                    return WaitResult(GONE, [os.path.dirname(t.path)])
            continue
        record = read_record(t.path)
        if record is None:
            missing.append(t.label)
            if not os.path.isdir(os.path.dirname(t.path)):
                # Nothing can appear there any more: waiting would last until TIMEOUT.
                return WaitResult(GONE, [os.path.dirname(t.path)])
        elif not _job_matches(record, job_id):
            # Left over from another job: never lets this stage run.
            missing.append(t.label)
            stale.append(t.label)
    return WaitResult(READY if not missing else TIMEOUT, missing, stale=tuple(stale))


def wait_for(
    targets: List[WaitTarget],
    job_id: str,
    deadline: Optional[float],
    wake_fd: int,
    use_inotify: bool,
    on_watching: Optional[Callable[[str], None]] = None,
) -> Tuple[WaitResult, str, Callable[[], None]]:
    """Wait as described above; returns (result, mechanism, release).

    ``mechanism`` is "inotify" or "polling ...". ``on_watching(mechanism)`` is called once
    the watch is in place, before the first look at the files, so that "waiting" messages
    are true when printed. ``wake_fd`` must be non-blocking. The caller calls ``release()``
    once its lock or marker is written: closing an inotify descriptor waits for a kernel
    RCU grace period (~10 ms), which must delay neither the program's start nor the lock.
    """
    notifier = None
    mechanism = "polling"
    if use_inotify and targets:
        folders = sorted({os.path.dirname(t.path) for t in targets})
        try:
            notifier = Inotify(folders)
            mechanism = "inotify"
        except OSError as e:
            mechanism = "polling (inotify unavailable: %s)" % (e.strerror or e)
    if on_watching is not None:
        on_watching(mechanism)
    # Only events about these names call for a new look at the files: every stage's lock
    # lands in the one shared folder and wakes every waiting stage.
    relevant: Set[str] = set()
    for t in targets:
        relevant.add(os.path.basename(t.path))
        if t.failed_path is not None:
            relevant.add(os.path.basename(t.failed_path))
    release = notifier.close if notifier is not None else _nothing
    try:
        if notifier is not None:
            return _wait_inotify(notifier, targets, job_id, deadline, wake_fd, relevant), mechanism, release
        return _wait_polling(targets, job_id, deadline, wake_fd), mechanism, release
    except BaseException:
        release()
        raise


def _wait_inotify(notifier: Inotify, targets: List[WaitTarget], job_id: str, deadline: Optional[float],
                  wake_fd: int, relevant: Set[str]) -> WaitResult:
    fds = [notifier.fd, wake_fd]
    while True:
        # The first check comes after the watch is in place: a file created before
        # add_watch is found here, one created after it raises an event.
        result = check(targets, job_id)
        if result.outcome in (READY, FAILED, GONE):
            return result
        if notifier.folder_gone:
            # Its watch went with it: go on by polling (the folder may have been replaced).
            return _wait_polling(targets, job_id, deadline, wake_fd)
        # Kept tight: most wake-ups are about other stages' files.
        while True:
            if deadline is None:
                remaining = None
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return result
            readable = select.select(fds, [], [], remaining)[0]
            if wake_fd in readable and _drain_wake(wake_fd):
                return WaitResult(INTERRUPTED, result.missing, stale=result.stale)
            if notifier.fd in readable:
                names = notifier.read_names()
                if names is None or not relevant.isdisjoint(names):
                    break


def _wait_polling(targets: List[WaitTarget], job_id: str, deadline: Optional[float],
                  wake_fd: int) -> WaitResult:
    delay = POLL_FIRST_S
    while True:
        result = check(targets, job_id)
        if result.outcome in (READY, FAILED, GONE):
            return result
        pause = delay
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return result
            pause = min(delay, remaining)
        # Sleeping in select() on the wake descriptor lets a signal cut the pause short.
        if select.select([wake_fd], [], [], pause)[0] and _drain_wake(wake_fd):
            return WaitResult(INTERRUPTED, result.missing, stale=result.stale)
        delay = min(delay * POLL_BACKOFF, POLL_MAX_S)


def _nothing() -> None:
    pass


def _drain_wake(fd: int) -> bool:
    woke = False
    while True:
        try:
            if not os.read(fd, 512):
                return woke
            woke = True
        except BlockingIOError:
            return woke
        except InterruptedError:
            continue
