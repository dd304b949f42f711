"""The repository, the sample job, and private copies of the project for tests that edit or run it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JOB = "00000000-0000-0000-0000-000000000000"


# The reference stages this project ships beyond the guide's starting point (ai-vnet only).
REFERENCE_STAGES = ("dicom-reader", "dicom-writer", "recon", "ai-livertumor")


def copy_project(dest: Path, reference_stages: bool = False) -> Path:
    """A private copy of the project's charts and sample job, for tests that edit or run them.

    By default the copy is the guide's starting point - ai-vnet is the only stage - so the
    tests can walk through the guide (`cs dicom-reader`, importing a pipeline whose
    operators are named dicom-reader ...); ``reference_stages=True`` keeps every shipped stage.
    """
    shutil.copytree(REPO / "charts", dest / "charts", ignore=shutil.ignore_patterns(".tmp-*"))
    (dest / "test-data" / JOB / "ai-vnet" / "input").mkdir(parents=True)
    if not reference_stages:
        from clara_wf import charts
        from clara_wf.project import find_project

        project = find_project(start=dest)
        for name in REFERENCE_STAGES:
            if (project.stages_dir / name).is_dir():
                charts.delete_stage(project, name, force=True)
    return dest


def tree_digest(root: Path) -> str:
    """Everything under root (names, modes and bytes): equal digests mean nothing changed."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()
