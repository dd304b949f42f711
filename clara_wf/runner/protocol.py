"""The lock-file protocol's fixed names, exit codes and records (docs/lock-protocol.md).

Everything a launcher or a watcher (the local engine, `clara-wf test`) needs to read a
run's lock folder is defined here, so that the runner and its readers cannot drift apart.
Standard library only, Python 3.8+.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from typing import Any, Dict, List, Optional

PROTOCOL_VERSION = 1

ENV_PREFIX = "NVIDIA_CLARA_"
# Forces the polling fallback even where inotify works (benchmarks, tests, odd filesystems).
POLL_ENV = "CLARA_WF_RUNNER_POLL"

STATUS_TAG = "clara-wf-stage"  # status lines: "[clara-wf-stage <stage>] <message>"
FAILED_SUFFIX = ".failed"  # failure marker of lock L is L + ".failed", in the same folder
# Records are written in LOCKDIR/.tmp/ and renamed into LOCKDIR: a watcher of LOCKDIR
# then sees one event per lock (IN_MOVED_TO), not three, and never a partial file.
TMP_DIR = ".tmp"
TMP_PREFIX = "."  # names starting with "." in LOCKDIR are not locks: watchers skip them
TMP_SUFFIX = ".tmp"

# Exit codes the runner owns. 112-116 sit clear of 0-2, sysexits (64-78), timeout(1)'s
# 124/125, the shell's 126/127 and 128+N (killed by signal N).
EXIT_OK = 0
EXIT_CONFIG = 112  # missing or malformed variable, folder not creatable, no program given
EXIT_TIMEOUT = 113  # TIMEOUT passed before every awaited lock existed
EXIT_UPSTREAM_FAILED = 114  # an awaited stage wrote a failure marker; program not run
EXIT_START_FAILED = 115  # the program could not be started (not found, not executable)
EXIT_LOCK_WRITE = 116  # the program succeeded but LOCKNAME could not be written
EXIT_RUN_TIMEOUT = 117  # the program ran longer than RUNTIMEOUT and was stopped
EXIT_LOCKDIR_GONE = 118  # LOCKDIR was deleted or moved away while the stage waited
EXIT_SIGNAL_BASE = 128  # program (or runner while waiting) ended by signal N: 128 + N

RUNNER_EXIT_CODES = {
    EXIT_CONFIG: "configuration error",
    EXIT_TIMEOUT: "timed out waiting for upstream locks",
    EXIT_UPSTREAM_FAILED: "an upstream stage failed",
    EXIT_START_FAILED: "the program could not be started",
    EXIT_LOCK_WRITE: "the lock file could not be written",
    EXIT_RUN_TIMEOUT: "the program ran past its run timeout and was stopped",
    EXIT_LOCKDIR_GONE: "the lock folder was deleted while the stage waited",
}

STATUS_SUCCEEDED = "succeeded"  # only in LOCKNAME
STATUS_FAILED = "failed"  # program exited non-zero or was killed; driver callback failed
STATUS_TIMEOUT = "timeout"
STATUS_UPSTREAM_FAILED = "upstream-failed"
STATUS_CONFIG_ERROR = "config-error"
STATUS_START_FAILED = "start-failed"
STATUS_TERMINATED = "terminated"  # SIGTERM/SIGINT reached the runner before the program ran
STATUS_LOCK_WRITE_FAILED = "lock-write-failed"
STATUS_RUN_TIMEOUT = "run-timeout"
STATUS_LOCKDIR_GONE = "lockdir-gone"


_HOST = socket.gethostname()  # read once: records are written in the hand-off's critical path


def failure_marker_name(lock_name: str) -> str:
    return lock_name + FAILED_SUFFIX


def stage_of_lock(lock_name: str) -> str:
    """Best guess of a stage's name from its lock name (chart convention: <stage>.lock)."""
    base = os.path.basename(lock_name)
    return base[: -len(".lock")] if base.endswith(".lock") else base


def iso_time(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec="microseconds")


def make_record(
    *,
    stage: str,
    lock: str,
    status: str,
    exit_code: int,
    program_exit_code: Optional[int],
    job_id: str,
    job_name: str,
    start_epoch: float,
    end_epoch: float,
    waited_s: Optional[float],
    failed_stage: Optional[str] = None,
    message: str = "",
    attempts: Optional[List[Dict[str, Any]]] = None,
    log: str = "",
) -> Dict[str, Any]:
    return {
        "attempts": attempts or [],
        "log": log,
        "protocol": PROTOCOL_VERSION,
        "stage": stage,
        "lock": lock,
        "status": status,
        "exit_code": exit_code,
        "program_exit_code": program_exit_code,
        "failed_stage": failed_stage,
        "message": message,
        "job_id": job_id,
        "job_name": job_name,
        "start_time": iso_time(start_epoch),
        "start_epoch": start_epoch,
        "end_time": iso_time(end_epoch),
        "end_epoch": end_epoch,
        "waited_s": None if waited_s is None else round(waited_s, 6),
        "pid": os.getpid(),
        "host": _HOST,
    }


def write_record_atomic(path: str, record: Dict[str, Any]) -> None:
    """Write JSON to ``<folder>/.tmp/<name>.<pid>.tmp``, then rename it into place.

    rename() is atomic within a filesystem, so a reader sees either no file or the whole
    record, never a partial one. No fsync: readers are on the same host, and a crashed
    node loses the whole run anyway.
    """
    folder, name = os.path.split(path)
    tmp_dir = os.path.join(folder, TMP_DIR)
    try:
        # mkdir, not makedirs: a LOCKDIR deleted under the run is an error, not re-created
        # (stages waiting in the old folder would never see the file).
        os.mkdir(tmp_dir)
    except FileExistsError:
        pass
    tmp = os.path.join(tmp_dir, "%s.%d%s" % (name, os.getpid(), TMP_SUFFIX))
    data = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            # A full disk may take part of the data, then refuse the rest: never rename a
            # partial record into place.
            view = view[os.write(fd, view):]
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except OSError as e:
        if fd >= 0:
            os.close(fd)
        _unlink_quietly(tmp)
        if e.filename is None:
            e.filename = path
        raise


def read_record(path: str) -> Optional[Dict[str, Any]]:
    """The record in a lock or marker; {} when it exists but holds no JSON object
    (e.g. made by `touch`), None when it does not exist."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        # Exists but unreadable (a folder, no permission): existence is what counts.
        return {} if os.path.lexists(path) else None
    try:
        record = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
