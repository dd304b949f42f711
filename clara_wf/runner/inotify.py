"""Linux inotify through ctypes: wake up when a file appears in a watched folder.

Only "something changed in this folder" is reported; callers re-check the files they
wait for, which also makes a queue overflow (IN_Q_OVERFLOW) harmless.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
from typing import Iterable, Optional, Set

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
# A lock appears by rename (IN_MOVED_TO); a hand-made one by create/close (IN_CREATE,
# IN_CLOSE_WRITE: content may arrive after the create).
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
# The watched folder itself deleted or moved away (e.g. a stage ran `rm -rf $LOCKDIR`):
# its locks can no longer appear there, and the watch is gone (IN_IGNORED follows).
WATCH_MASK = IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF
IN_IGNORED = 0x00008000
FOLDER_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED
IN_Q_OVERFLOW = 0x00004000
IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000

_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (+ name[len])
_libc = None  # type: Optional[ctypes.CDLL]


def _load_libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        if not sys.platform.startswith("linux"):
            raise OSError(errno.ENOSYS, "inotify exists only on Linux")
        # CDLL(None) finds the C library already loaded into the interpreter (glibc or musl).
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "inotify_init1"):
            raise OSError(errno.ENOSYS, "the C library has no inotify_init1")
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_init1.restype = ctypes.c_int
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_add_watch.restype = ctypes.c_int
        _libc = libc
    return _libc


class Inotify:
    """An inotify descriptor watching folders; ``fd`` is for select(), ``drain()`` empties it."""

    def __init__(self, folders: Iterable[str]):
        libc = _load_libc()
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, "inotify_init1: %s" % os.strerror(e))
        self.fd = fd
        self.folder_gone = False  # a watched folder was deleted or moved: watch no more
        try:
            for folder in folders:
                if libc.inotify_add_watch(fd, os.fsencode(folder), WATCH_MASK) < 0:
                    e = ctypes.get_errno()
                    raise OSError(e, "inotify_add_watch %s: %s" % (folder, os.strerror(e)))
        except BaseException:
            self.close()
            raise

    def read_names(self) -> Optional[Set[str]]:
        """The file names of the pending events (one read: select() reports any rest), or
        None when events were lost (queue overflow) and anything may have changed."""
        try:
            data = os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return set()
        names: Set[str] = set()
        offset = 0
        while offset + _EVENT.size <= len(data):
            _, mask, _, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            if mask & IN_Q_OVERFLOW:
                return None
            if mask & FOLDER_GONE:
                self.folder_gone = True
                return None
            names.add(os.fsdecode(data[offset:offset + length].rstrip(b"\0")))
            offset += length
        return names

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
