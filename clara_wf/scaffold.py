"""The operator app of a stage: ``apps/NAME`` (main.py, requirements.txt, Dockerfile, env.list).

``clara-wf cs NAME`` creates the chart half of a stage (``charts.create_stage``) and, here,
the program the stage runs, as Clara's operator development kit gives a developer
(seed 000): a working pass-through ``main.py`` over ``clara_payload``, an empty
``requirements.txt``, a ``Dockerfile`` built from the project root (base image as a build
argument, the stage runner and payload module copied in, the program under the runner),
and ``env.list`` with what a stand-alone run needs. The files are rendered from
``clara_wf/templates/app`` with the same ``[[= name =]]`` delimiters as the chart
templates. An existing ``apps/NAME`` is never touched.

``ds NAME`` removes ``apps/NAME`` only while it is exactly what ``cs`` wrote (the files
are rendered again and compared), so no one's code is ever deleted by it.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from clara_wf import charts
from clara_wf.errors import InputError
from clara_wf.project import Project

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates" / "app"
APPS_DIR = "apps"
# Left behind by running the app; not the user's work.
_GENERATED = ("__pycache__",)


def app_dir(project: Project, name: str) -> Path:
    return project.root / APPS_DIR / name


def render_app(name: str) -> Dict[str, str]:
    """The scaffold's files for stage ``name``: path relative to the app → content."""
    if not TEMPLATE_DIR.is_dir():
        raise InputError(f"{TEMPLATE_DIR} is missing: the operator app template of clara-wf")
    return {
        source.relative_to(TEMPLATE_DIR).as_posix(): charts.render_template(source.read_text(encoding="utf-8"), name, source)
        for source in sorted(TEMPLATE_DIR.rglob("*"))
        if source.is_file() and "__pycache__" not in source.parts
    }


@dataclass
class StageScaffold:
    """What ``cs`` did: the chart half, and the app (None: not asked; False: kept the one there)."""

    change: charts.StageChange
    app_dir: Path
    app_created: Optional[bool]


def create_stage(project: Project, name: str, *, app: bool = True) -> StageScaffold:
    """``cs``: the chart stage, plus ``apps/NAME`` unless it exists or ``app`` is False.

    The app lands in the chart edit's transaction (its journal): both or neither, and a
    refused ``cs`` writes nothing.
    """
    charts.check_stage_name(name)
    target = app_dir(project, name)
    # Whether apps/NAME exists is decided under the chart lock, after recovery (charts.create_stage):
    # a folder left by an interrupted `cs` is rolled back there, and must then be made again.
    more = {target: render_app(name)} if app else {}
    apps_existed = target.parent.exists()
    try:
        change = charts.create_stage(project, name, more_folders=more)
    except BaseException:
        if not apps_existed:  # the apps/ folder made for this app: its scratch, then itself if empty
            for entry in target.parent.glob(f"{charts.TMP_PREFIX}*"):
                shutil.rmtree(entry, ignore_errors=True)
            with contextlib.suppress(OSError):
                target.parent.rmdir()
        raise
    created: Optional[bool] = None if not app else target in change.created_folders
    return StageScaffold(change, target, created)


@dataclass
class AppRemoval:
    app_dir: Path
    removed: bool
    why_kept: str = ""  # when not removed and the folder exists


def _generated(relative: Path) -> bool:
    """Left by running or building the app (bytecode, fetched wheels): not the user's work."""
    parts = relative.parts
    return (any(p in _GENERATED for p in parts) or relative.suffix == ".pyc"
            or (parts[0] == "wheels" and (relative.suffix == ".whl" or relative.name == ".clara-wf-wheels")))


def _app_files(folder: Path) -> Dict[str, Path]:
    found = {}
    for path in folder.rglob("*"):
        if _generated(path.relative_to(folder)):
            continue
        if path.is_file() or path.is_symlink() or (path.is_dir() and not any(path.iterdir())):
            found[str(path.relative_to(folder))] = path
    return found


def changes_from_scaffold(project: Project, name: str) -> List[str]:
    """How ``apps/NAME`` differs from what ``cs NAME`` writes (empty: unchanged)."""
    folder = app_dir(project, name)
    expected = render_app(name)
    present = _app_files(folder)
    changed = sorted(f for f in present if f in expected and (
        not present[f].is_file() or present[f].is_symlink()
        or present[f].read_bytes() != expected[f].encode("utf-8")))
    added = sorted(f for f in present if f not in expected)
    removed = sorted(f for f in expected if f not in present)
    return ([f"{f} changed" for f in changed] + [f"{f} added" for f in added]
            + [f"{f} removed" for f in removed])


def delete_stage(project: Project, name: str, force: bool = False) -> Tuple[charts.StageChange, AppRemoval]:
    """``ds``: the chart stage, and ``apps/NAME`` when it is the untouched scaffold (in the
    same transaction; ``apps/`` goes too when nothing else is in it); otherwise the app is
    kept and the removal says why."""
    folder = app_dir(project, name)
    removal = AppRemoval(folder, removed=False)

    def untouched_app() -> List[Path]:
        if not folder.is_dir() or folder.is_symlink():
            return []
        differences = changes_from_scaffold(project, name)
        if differences:
            shown = ", ".join(differences[:3]) + (f" and {len(differences) - 3} more" if len(differences) > 3 else "")
            removal.why_kept = f"it differs from the scaffold ({shown})"
            return []
        removal.removed = True
        others = [e for e in folder.parent.iterdir() if e.name != name and not e.name.startswith(charts.TMP_PREFIX)]
        return [folder] if others else [folder.parent]

    change = charts.delete_stage(project, name, force=force, also_remove=untouched_app)
    return change, removal
