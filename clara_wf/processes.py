"""Process groups clara-wf starts and stops: the local engine's stages and the local Triton.

Each is started in a session of its own (so a Ctrl-C at the terminal reaches clara-wf only,
and clara-wf decides what stops) and stopped as a whole group: SIGTERM, a grace period,
then SIGKILL for whatever is left. (The stage runner, which must stay standard-library
only, has its own small copy for the program it supervises.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import TYPE_CHECKING, Iterable, List, Mapping, Optional, Sequence, Union

from clara_wf import external

if TYPE_CHECKING:
    import subprocess

STOP_GRACE_S = 5.0
# After the leader exits, its children (e.g. Triton's python backend stubs) get this much
# longer to notice before they are killed.
STRAGGLER_GRACE_S = 2.0


def _die_with_parent() -> None:
    """In the child: get SIGTERM if clara-wf dies, so nothing outlives it (Linux)."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_group(argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None, die_with_parent: bool = False,
                **popen_args) -> "subprocess.Popen":
    """Start ``argv`` as the leader of a new process group (through ``external.start``)."""
    if die_with_parent:
        popen_args["preexec_fn"] = _die_with_parent
    return external.start(argv, env=env, start_new_session=True, **popen_args)


def alive(pid: int) -> bool:
    """Does ``pid`` run? (A zombie does not; our own exited child is reaped first.)"""
    import psutil

    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def runs_program(pid: int, name: str) -> bool:
    """Is ``pid`` still the program ``name`` (not a recycled pid)? True when it cannot be told."""
    import psutil

    try:
        return any(name in part for part in psutil.Process(pid).cmdline())
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


Leader = Union[int, "subprocess.Popen"]


def _pid(leader: Leader) -> int:
    return leader if isinstance(leader, int) else leader.pid


def _leader_alive(leader: Leader) -> bool:
    # A Popen is asked (so it keeps its exit code); a bare pid is probed.
    return alive(leader) if isinstance(leader, int) else leader.poll() is None


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def stop_groups(leaders: Iterable[Leader], grace: float = STOP_GRACE_S) -> None:
    """Stop each leader's whole group: SIGTERM, up to ``grace`` s for the leaders to exit and a
    little more for the rest of their groups, then SIGKILL. Returns when all are gone."""
    running: List[Leader] = [leader for leader in leaders if _leader_alive(leader) or group_alive(_pid(leader))]
    for leader in running:
        _signal_group(_pid(leader), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_leader_alive(leader) for leader in running) and time.monotonic() < deadline:
        time.sleep(0.05)
    deadline = time.monotonic() + min(grace, STRAGGLER_GRACE_S)
    while any(group_alive(_pid(leader)) for leader in running) and time.monotonic() < deadline:
        for leader in running:
            _leader_alive(leader)  # reap a leader that is our child, so its group can empty
        time.sleep(0.05)
    for leader in running:
        if _leader_alive(leader) or group_alive(_pid(leader)):
            _signal_group(_pid(leader), signal.SIGKILL)
    for _ in range(100):
        if not any(_leader_alive(leader) or group_alive(_pid(leader)) for leader in running):
            break
        time.sleep(0.02)
    for leader in running:
        if not isinstance(leader, int):
            with contextlib.suppress(Exception):
                leader.wait(timeout=1)
