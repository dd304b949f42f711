"""Reads and checks the NVIDIA_CLARA_* variables a stage runner works from.

Every problem is collected, so that one run reports all of them before anything waits
or runs (docs/lock-protocol.md, "Variables").
"""

from __future__ import annotations

import math
import os
from typing import List, Mapping, NamedTuple, Optional

from clara_wf.runner.protocol import ENV_PREFIX, FAILED_SUFFIX, POLL_ENV, TMP_PREFIX, failure_marker_name


class ConfigError(Exception):
    """One or more variables are missing or malformed; ``problems`` has one line each."""

    def __init__(self, problems: List[str], stage: str = "", lock_path: Optional[str] = None):
        super().__init__("; ".join(problems))
        self.problems = problems
        self.stage = stage
        # Where a failure marker can still go (LOCKDIR and LOCKNAME were fine), else None.
        self.lock_path = lock_path


class WaitTarget(NamedTuple):
    label: str  # how messages name it: the lock name, or INPUTLOCK's path
    path: str
    failed_path: Optional[str]  # failure marker to watch; None for the platform's INPUTLOCK
    check_job: bool  # ignore a record whose job_id differs from ours (a stale run's lock)


class StageConfig(NamedTuple):
    stage: str
    lock_dir: Optional[str]
    lock_name: Optional[str]
    wait_names: List[str]
    input_lock: Optional[str]
    run_simple: bool
    no_sync: bool
    timeout: float  # seconds the wait may take; 0 = no limit
    run_timeout: float  # seconds each attempt of the program may take; 0 = no limit
    retries: int  # further attempts after a failed one
    retry_backoff: float  # seconds before the first retry, doubled before each next one
    stop_grace: float  # seconds between SIGTERM and SIGKILL when the runner stops the program
    log_name: Optional[str]
    app_dir: Optional[str]
    inputs: str
    outputs: str
    job_id: str
    job_name: str
    trtis_uri: str
    poll: bool

    @property
    def lock_path(self) -> Optional[str]:
        if self.lock_dir and self.lock_name:
            return os.path.join(self.lock_dir, self.lock_name)
        return None

    @property
    def failed_path(self) -> Optional[str]:
        path = self.lock_path
        return failure_marker_name(path) if path else None

    def wait_targets(self) -> List[WaitTarget]:
        if self.no_sync:
            return []
        assert self.lock_dir is not None
        targets = []
        for name in self.wait_names:
            path = os.path.join(self.lock_dir, name)
            targets.append(WaitTarget(name, path, failure_marker_name(path), True))
        if not self.wait_names and not self.run_simple:
            assert self.input_lock is not None
            targets.append(WaitTarget(self.input_lock, self.input_lock, None, False))
        return targets


DEFAULT_RETRY_BACKOFF_S = 1.0
DEFAULT_STOP_GRACE_S = 3.0  # below a launcher's own grace (the local engine: 5 s), so the runner finishes its record
MAX_RETRIES = 100


def var(name: str) -> str:
    return ENV_PREFIX + name


def _flag(env: Mapping[str, str], name: str, problems: List[str]) -> bool:
    value = env.get(var(name), "").strip()
    if value.upper() in ("", "FALSE"):
        return False
    if value.upper() == "TRUE":
        return True
    problems.append("%s must be TRUE or FALSE, got %r" % (var(name), value))
    return False


def _seconds(env: Mapping[str, str], name: str, problems: List[str], default: float, meaning: str) -> float:
    text = env.get(var(name), "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        problems.append("%s must be a number of seconds >= 0 (%s), got %r" % (var(name), meaning, text))
        return default
    return value


def _absolute(env: Mapping[str, str], name: str, problems: List[str], required: bool) -> Optional[str]:
    value = env.get(var(name), "")
    if not value.strip():
        if required:
            problems.append("%s is not set (an absolute path is needed)" % var(name))
        return None
    if "\0" in value or not os.path.isabs(value):
        problems.append("%s must be an absolute path, got %r" % (var(name), value))
        return None
    return os.path.normpath(value)


def _file_name_problem(value: str) -> Optional[str]:
    """Why ``value`` cannot be a lock name inside LOCKDIR, or None."""
    if not value:
        return "is empty"
    if "/" in value or "\0" in value:
        return "must be a file name inside LOCKDIR, not a path"
    if value in (".", ".."):
        return "is not a file name"
    if value.startswith(TMP_PREFIX):
        return "must not start with '.' (reserved for temporary files)"
    if value.endswith(FAILED_SUFFIX):
        return "must not end with %r (reserved for failure markers)" % FAILED_SUFFIX
    return None


def load_config(env: Mapping[str, str]) -> StageConfig:
    problems: List[str] = []
    no_sync = _flag(env, "NOSYNCLOCK", problems)
    run_simple = _flag(env, "RUNSIMPLE", problems)

    stage = env.get(var("STAGENAME"), "").strip()
    if not stage and not no_sync:
        problems.append("%s is not set" % var("STAGENAME"))
    elif "\n" in stage:
        problems.append("%s must be one line" % var("STAGENAME"))
        stage = stage.splitlines()[0]

    # Without NOSYNCLOCK the lock folder and name are the protocol itself; a stand-alone
    # operator (NOSYNCLOCK=TRUE) may leave them out, and then writes no lock.
    lock_dir = _absolute(env, "LOCKDIR", problems, required=not no_sync)
    lock_name: Optional[str] = env.get(var("LOCKNAME"), "").strip()
    if not lock_name:
        if not no_sync:
            problems.append("%s is not set (a file name inside LOCKDIR, e.g. %s.lock)" % (var("LOCKNAME"), stage or "stage"))
        lock_name = None
    else:
        why = _file_name_problem(lock_name)
        if why:
            problems.append("%s %s, got %r" % (var("LOCKNAME"), why, lock_name))
            lock_name = None

    wait_names: List[str] = []
    if var("WAITNAME") not in env and not no_sync:
        # Refused rather than read as "no upstream": a forgotten WAITNAME would let a
        # downstream stage run before its inputs exist.
        problems.append("%s is not set (set it to \"\" for a stage with no upstream)" % var("WAITNAME"))
    for item in env.get(var("WAITNAME"), "").split(","):
        item = item.strip()
        if not item:
            continue  # "a.lock,,b.lock" and a trailing comma come from template joins
        why = _file_name_problem(item)
        if why:
            problems.append("%s: %r %s" % (var("WAITNAME"), item, why))
        elif item == lock_name:
            problems.append("%s names the stage's own lock %r (it would wait for itself)" % (var("WAITNAME"), item))
        elif item not in wait_names:
            wait_names.append(item)

    needs_input_lock = not no_sync and not run_simple and not wait_names
    input_lock = _absolute(env, "INPUTLOCK", problems, required=needs_input_lock)

    timeout = _seconds(env, "TIMEOUT", problems, 0.0, "0 = no limit")
    run_timeout = _seconds(env, "RUNTIMEOUT", problems, 0.0, "0 = no limit")
    retry_backoff = _seconds(env, "RETRYBACKOFF", problems, DEFAULT_RETRY_BACKOFF_S, "the delay before the first retry")
    stop_grace = _seconds(env, "STOPGRACE", problems, DEFAULT_STOP_GRACE_S, "SIGTERM to SIGKILL")
    retries_text = env.get(var("RETRIES"), "").strip()
    retries = 0
    if retries_text:
        if retries_text.isdigit() and int(retries_text) <= MAX_RETRIES:
            retries = int(retries_text)
        else:
            problems.append("%s must be a whole number from 0 to %d, got %r" % (var("RETRIES"), MAX_RETRIES, retries_text))

    log_name = _absolute(env, "LOGNAME", problems, required=False)
    if log_name is not None and log_name.endswith("/"):
        problems.append("%s must name a file, got %r" % (var("LOGNAME"), env[var("LOGNAME")]))
        log_name = None
    app_dir = _absolute(env, "APPDIR", problems, required=False)
    if app_dir is not None and not os.path.isdir(app_dir):
        problems.append("%s %r is not a folder" % (var("APPDIR"), app_dir))
        app_dir = None

    poll_text = env.get(POLL_ENV, "").strip()
    if poll_text not in ("", "0", "1"):
        problems.append("%s must be 1 (poll) or 0 (inotify where available), got %r" % (POLL_ENV, poll_text))

    lock_path = os.path.join(lock_dir, lock_name) if lock_dir and lock_name else None
    if problems:
        raise ConfigError(problems, stage=stage, lock_path=lock_path)
    return StageConfig(
        stage=stage,
        lock_dir=lock_dir,
        lock_name=lock_name,
        wait_names=wait_names,
        input_lock=input_lock,
        run_simple=run_simple,
        no_sync=no_sync,
        timeout=timeout,
        run_timeout=run_timeout,
        retries=retries,
        retry_backoff=retry_backoff,
        stop_grace=stop_grace,
        log_name=log_name,
        app_dir=app_dir,
        inputs=env.get(var("INPUTS"), ""),
        outputs=env.get(var("OUTPUTS"), ""),
        job_id=env.get(var("JOBID"), ""),
        job_name=env.get(var("JOBNAME"), ""),
        trtis_uri=env.get(var("TRTISURI"), ""),
        poll=poll_text == "1",
    )
