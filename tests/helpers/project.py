"""The repository, the sample job, and private copies of the project for tests that edit or run it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JOB = "00000000-0000-0000-0000-000000000000"


def copy_project(dest: Path) -> Path:
    """A private copy of the project's charts and sample job, for tests that edit or run them."""
    shutil.copytree(REPO / "charts", dest / "charts", ignore=shutil.ignore_patterns(".tmp-*"))
    (dest / "test-data" / JOB / "ai-vnet" / "input").mkdir(parents=True)
    return dest


def tree_digest(root: Path) -> str:
    """Everything under root (names, modes and bytes): equal digests mean nothing changed."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()
