"""The one home of atomic writes, file locks and symlink-safe opens.

* :func:`atomic_write` — a file is replaced whole or not at all: the new content goes
  to a temporary file beside it (``.NAME.*.tmp``), is flushed to disk, then renamed over
  the target. A reader sees the old file or the new one, never half of either; a kill -9
  leaves at most the temporary file (which :func:`remove_temp_files` clears).
* :func:`lock` — an advisory ``flock`` on a file or folder for the duration of a ``with``;
  the kernel drops it when the process dies, so a crash never leaves a stale lock.
* ``nofollow`` — files inside a job's folder are opened with ``O_NOFOLLOW`` (and their
  folder checked to stay inside the job's folder), so a symlink planted in test data cannot
  make clara-wf write somewhere else.

Standard library only: the stage runner may import it inside a stage image.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

TEMP_SUFFIX = ".tmp"


class UnsafePath(OSError):
    """A path that would be written through a symlink, or outside the folder it must stay in."""


def fsync_dir(folder: Union[str, Path]) -> None:
    """Make a rename or unlink in ``folder`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_write(
    path: Union[str, Path],
    data: Union[str, bytes],
    *,
    mode: Optional[int] = None,
    durable: bool = True,
    inside: Optional[Path] = None,
) -> None:
    """Replace ``path`` with ``data`` whole (str is written as UTF-8, line endings untouched).

    ``mode``: permission bits of the new file (default: those of the file replaced, else 0o644).
    ``durable``: fsync the file and its folder (survives a power cut, not only a kill -9).
    ``inside``: refuse unless the file's folder is inside this folder once symlinks are resolved
    (the file itself is never followed: the rename replaces a symlink, never its target).
    """
    path = Path(path)
    if inside is not None:
        check_inside(path.parent, inside)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if mode is None:
        try:
            mode = os.lstat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def remove_temp_files(folder: Path, name: str) -> int:
    """Remove what interrupted :func:`atomic_write` calls for ``folder/name`` left behind."""
    removed = 0
    prefix = temp_prefix(Path(name))
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.startswith(prefix) and entry.name.endswith(TEMP_SUFFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


@contextlib.contextmanager
def lock(path: Union[str, Path], *, shared: bool = False, blocking: bool = True, create: bool = False) -> Iterator[int]:
    """Hold an flock on ``path`` (a folder, or a lock file made when ``create``); yields its fd.

    Non-blocking and already held elsewhere: raises BlockingIOError. Released on exit (and
    by the kernel if the process dies).
    """
    flags = os.O_RDONLY
    if create:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
    fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
    try:
        operation = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        fcntl.flock(fd, operation if blocking else operation | fcntl.LOCK_NB)
        yield fd
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def check_inside(path: Union[str, Path], root: Union[str, Path]) -> Path:
    """``path`` with symlinks resolved, refused unless it stays inside ``root`` (resolved too)."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise UnsafePath(errno.EXDEV, f"refusing to write through a symlink that leads out of {root}", str(path))
    return Path(real)


def open_nofollow(path: Union[str, Path], flags: int, mode: int = 0o644, *, inside: Optional[Path] = None) -> int:
    """os.open with O_NOFOLLOW (a symlink as the last component is refused with ELOOP), the folder
    checked to stay inside ``inside``; the error names the path."""
    path = Path(path)
    if inside is not None:
        check_inside(path.parent, inside)
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UnsafePath(errno.ELOOP, "refusing to write through a symlink", str(path)) from None
        raise


def mkdir_inside(path: Union[str, Path], root: Union[str, Path]) -> Path:
    """``mkdir -p`` that refuses a symlinked component leading out of ``root``."""
    path = Path(path)
    check_inside(path, root) if path.exists() or path.is_symlink() else None
    for parent in reversed([path, *path.parents]):
        if parent.is_symlink():
            check_inside(parent, root)
    path.mkdir(parents=True, exist_ok=True)
    check_inside(path, root)
    return path
