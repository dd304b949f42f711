"""The runner's hold on the processes its program starts: none outlives the stage.

The runner makes itself a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``): whatever
the program leaves behind — ``cmd &``, ``nohup``, ``setsid``, a double-forked daemon —
is re-parented to the runner instead of to init when its parent exits. So once the
program has exited, every survivor is a descendant of the runner, found by walking
``/proc``, and ended (SIGTERM, then SIGKILL after a grace) before the stage's lock is
written. Standard library only.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Dict, Iterator, List, Set, Tuple

PR_SET_CHILD_SUBREAPER = 36


PR_SET_NAME = 15
PROCESS_NAME = b"clara-wf-stage"  # what ps/top show as a runner's name (comm)


def name_process(name: bytes = PROCESS_NAME) -> None:
    """Name this process (its comm, at most 15 bytes) so that ps shows what it is."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, ctypes.c_char_p(name[:15]), 0, 0, 0)
        except (OSError, AttributeError):
            pass


def become_subreaper(on: bool = True) -> bool:
    """True when orphans of our descendants now come to us (Linux 3.4+); ``on=False`` ends it
    (a long-lived process must, or it collects zombies it never reaps)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def set_parent_death_signal(signum: int) -> bool:
    """Get ``signum`` when the parent (the thread that forked us) ends (Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(1, signum, 0, 0, 0) == 0  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def has_children() -> bool:
    """Does this process have any child (alive or a zombie)? Costs one system call.

    A descendant still alive after the program exited has an unbroken chain of parents up
    to the runner (a subreaper), so "no child" means "no descendant"."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except OSError:
        return True
    return True


def _proc_stats() -> Iterator[Tuple[int, List[bytes]]]:
    """(pid, the fields of /proc/PID/stat after the command name) of every process."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read()
        except OSError:
            continue  # ended meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        yield int(entry), stat[stat.rfind(b")") + 2:].split()


def descendants(root: int) -> List[int]:
    """Pids of every process below ``root``, parents before children (from /proc)."""
    children: Dict[int, List[int]] = {}
    for pid, fields in _proc_stats():
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(pid)
    found: List[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _reap(pids: List[int]) -> List[int]:
    """Reap those of ``pids`` that are our exited children; the ones still there."""
    left = []
    for pid in pids:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            # Not our child (a grandchild whose parent lives): alive while /proc has it.
            if os.path.exists("/proc/%d" % pid):
                left.append(pid)
            continue
        except OSError:
            continue
        if done == 0:
            left.append(pid)
    return left


def _signal_all(pids: List[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] != b"Z"


def end_descendants(grace: float) -> List[int]:
    """End every descendant of this process: SIGTERM, then SIGKILL after ``grace`` s.

    Returns the pids that were found alive. Call only when the program itself is reaped
    (so that no ``Popen.wait`` is pending): the exited ones are reaped here."""
    me = os.getpid()
    ended: List[int] = []
    deadline = time.monotonic() + grace
    signum = signal.SIGTERM
    for _ in range(1000):  # bounded: a fork bomb must not keep the runner here forever
        if not has_children():
            break
        pids = descendants(me)
        alive = [p for p in pids if _alive(p)]
        for pid in alive:
            if pid not in ended:
                ended.append(pid)
        _reap(pids)
        if not alive:
            if not _reap(pids) and not has_children():
                break
            time.sleep(0.002)
            continue
        if time.monotonic() >= deadline:
            signum = signal.SIGKILL
        _signal_all(alive, signum)
        time.sleep(0.005)
        _reap(descendants(me))
    return ended


def session_members(sid: int) -> List[int]:
    """Pids of the live processes in session ``sid`` (from /proc).

    For launchers on a host: a runner started with ``start_new_session=True`` leads a
    session that its program and the program's children stay in (unless they call
    setsid), even after the runner itself was killed with SIGKILL."""
    # fields: state ppid pgrp session ...
    return [pid for pid, fields in _proc_stats() if len(fields) > 3 and fields[0] != b"Z" and int(fields[3]) == sid]


def kill_session(sid: int, signum: int = signal.SIGKILL) -> List[int]:
    """Send ``signum`` to every process of session ``sid``; the pids signalled."""
    pids = session_members(sid)
    _signal_all(pids, signum)
    return pids


def end_orphans(keep: Set[int], grace: float = 1.0) -> List[int]:
    """For a launcher that is a subreaper: end the processes re-parented to it (and theirs),
    other than its own children in ``keep``; the pids ended. Setsid'ed descendants of a
    runner killed with SIGKILL land here."""
    me = os.getpid()
    below = descendants(me)
    roots = [pid for pid in below if parent_of(pid) == me and pid not in keep]
    doomed: List[int] = []
    for root in roots:
        doomed.append(root)
        doomed.extend(descendants(root))
    alive = [p for p in doomed if _alive(p)]
    _signal_all(alive, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while [p for p in alive if _alive(p)] and time.monotonic() < deadline:
        _reap(roots)
        time.sleep(0.005)
    _signal_all([p for p in alive if _alive(p)], signal.SIGKILL)
    for _ in range(200):
        if not _reap(roots):
            break
        time.sleep(0.005)
    return alive


def parent_of(pid: int) -> int:
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    fields = stat[stat.rfind(b")") + 2:].split()
    return int(fields[1]) if len(fields) > 1 else 0


def kill_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except OSError:
        pass
