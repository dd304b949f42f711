"""An intent journal: a change of several files and folders lands whole or not at all.

A :class:`Transaction` collects what a command will do — folders to add (prepared in a
scratch folder beside their place), folders to remove, files to rewrite — and applies it
in :meth:`Transaction.commit`:

1. everything new is written to scratch names first (``.tmp-*`` folders, ``.NAME.*.tmp``
   files): a crash here leaves only scratch, which the next command removes;
2. the journal (what moves where, each rewritten file's old text and the new text's hash)
   is written atomically and durably: from now on a crash is undone from it;
3. the moves and rewrites are applied;
4. the journal is removed — this is the moment the change counts as done — and the
   removed folders (parked under ``.tmp-deleted-*``) are deleted.

:func:`recover` runs under the same lock at the start of the next command: a journal
left by a kill -9 is rolled back (folders moved back, old texts restored, scratch
removed), so the interrupted command had no effect and can simply be run again. A file
somebody edited since (neither the old nor the new text) is not overwritten: recovery
stops with a message naming the journal. An exception inside :meth:`commit` rolls back
the same way before it propagates.

Standard library only; the caller holds the lock (see :func:`clara_wf.fsio.lock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from clara_wf import fsio
from clara_wf.errors import InputError

JOURNAL_NAME = ".clara-wf-journal.json"
SCRATCH_PREFIX = ".tmp-"  # ignored by list_stages and by the chart's .helmignore


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Transaction:
    """What one command changes under ``root``; nothing is visible until :meth:`commit`."""

    def __init__(self, root: Path, label: str):
        self.root = Path(root)
        self.label = label
        self.moves: List[Tuple[Path, Path]] = []
        self.writes: Dict[Path, Tuple[str, str]] = {}  # path -> (old text, new text)
        self.parked: List[Path] = []  # scratch folders holding removed folders
        self.scratch: List[Path] = []
        self.done = False

    # -- what will change --------------------------------------------------------------------

    def new_folder(self, target: Path) -> Path:
        """A scratch folder to fill; it becomes ``target`` at commit."""
        staging = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{target.name}-", dir=target.parent))
        self.scratch.append(staging)
        self.moves.append((staging, target))
        return staging

    def remove_folder(self, target: Path) -> None:
        """``target`` disappears at commit (parked in a scratch folder, deleted once committed)."""
        park = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}deleted-{target.name}-", dir=target.parent))
        self.scratch.append(park)
        self.parked.append(park)
        self.moves.append((target, park / target.name))

    def write(self, path: Path, old: str, new: str) -> None:
        if old != new:
            self.writes[path] = (old, new)

    @property
    def empty(self) -> bool:
        return not self.moves and not self.writes

    # -- applying ----------------------------------------------------------------------------

    def _record(self) -> dict:
        rel = lambda p: os.path.relpath(p, self.root)  # noqa: E731 - the journal names paths relative to root
        return {
            "command": self.label,
            "pid": os.getpid(),
            "moves": [[rel(src), rel(dst)] for src, dst in self.moves],
            "writes": [{"path": rel(path), "old": old, "new_sha256": _sha(new.encode("utf-8"))}
                       for path, (old, new) in self.writes.items()],
            "scratch": [rel(p) for p in self.scratch],
        }

    def commit(self, before_apply: Optional[Callable[[], None]] = None) -> None:
        if self.empty:
            self.discard()
            return
        journal = self.root / JOURNAL_NAME
        fsio.atomic_write(journal, json.dumps(self._record()))
        try:
            for src, dst in self.moves:
                os.rename(src, dst)
            for path, (_old, new) in self.writes.items():
                fsio.atomic_write(path, new)
            os.unlink(journal)
            fsio.fsync_dir(self.root)
        except BaseException:
            with contextlib.suppress(Exception):
                rollback(self.root)
            raise
        self.done = True
        for park in self.parked:
            shutil.rmtree(park, ignore_errors=True)

    def discard(self) -> None:
        """Drop the scratch of a transaction that will not be committed."""
        for folder in self.scratch:
            shutil.rmtree(folder, ignore_errors=True)


def pending(root: Path) -> bool:
    return (Path(root) / JOURNAL_NAME).exists()


def rollback(root: Path) -> Optional[str]:
    """Undo what the journal in ``root`` describes; returns its command's label (None: no journal)."""
    root = Path(root)
    journal = root / JOURNAL_NAME
    try:
        record = json.loads(journal.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        # A journal is written atomically: a torn one is not ours. Leave it for a person.
        raise InputError(f"{journal} is not a clara-wf journal (damaged?): look at it, then remove it") from None
    label = str(record.get("command", "?"))
    conflicts = []
    for item in record.get("writes", []):
        path = root / item["path"]
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            current = None
        old = item["old"].encode("utf-8")
        if current == old:
            continue
        if current is not None and _sha(current) == item["new_sha256"]:
            fsio.atomic_write(path, old)
        else:
            conflicts.append(str(path))
    if conflicts:
        raise InputError(
            f"an interrupted `clara-wf {label}` left {journal}, but {', '.join(conflicts)} changed since: "
            "check the file, then remove the journal"
        )
    for src, dst in reversed(record.get("moves", [])):
        src_path, dst_path = root / src, root / dst
        if os.path.lexists(dst_path) and not os.path.lexists(src_path):
            os.rename(dst_path, src_path)
    os.unlink(journal)
    fsio.fsync_dir(root)
    for folder in record.get("scratch", []):
        shutil.rmtree(root / folder, ignore_errors=True)
    return label
