"""Each stage's own Python: a virtual environment per ``requirements.txt``, made once by uv.

A stage's libraries are listed in ``<source>/requirements.txt`` (``apps/NAME``); the local
engine runs the stage's ``python3`` with a virtual environment holding exactly those, so
clara-wf's own environment carries none of them and two stages may pin different
versions. Environments live in the machine-wide cache (``$CLARA_WF_CACHE``, else
``$XDG_CACHE_HOME/clara-wf``) under ``venvs/<key>``, the key being the hash of the
requirements' text, the interpreter's version and the platform: made once (uv, from the
package index, with its progress passed on line by line), reused by every later run with
no network at all. A ``.complete`` marker is written last, so an interrupted build is
never used; builds of one key are serialised across processes by a lock.

The stage program also needs ``clara_wf.payload`` (and the stage runner): ``stage_lib()``
is a folder holding just those standard-library-only modules, as the stage image has
them in /opt/clara-wf, put on the stage's PYTHONPATH by the engine; so the same import
works with any interpreter, in every engine and in the image.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from clara_wf import external
from clara_wf.errors import ExternalToolError, InputError

REQUIREMENTS = "requirements.txt"
COMPLETE = ".complete"
RECIPE = 1  # bump when the way environments are made changes
Progress = Callable[[str], None]
# What the stage image holds in /opt/clara-wf (its Dockerfile COPY lines): stdlib only.
_LIB_FILES = ("__init__.py", "payload.py")
_LIB_DIRS = ("runner",)
_PACKAGE = Path(__file__).resolve().parent


def _no_progress(message: str) -> None:
    """The default ``progress``: nowhere."""


def cache_dir() -> Path:
    from clara_wf.containers.base_image import cache_dir as machine_cache

    return machine_cache()


def uv_binary() -> str:
    """uv from its PyPI wheel (a dependency of clara-wf), else from PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return external.find_program("uv")


def env_key(requirements_text: str, python: str = sys.executable) -> str:
    """Same requirements, same interpreter version and platform → the same environment."""
    version = f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}"
    lines = [line.strip() for line in requirements_text.splitlines()]
    spec = "\n".join([f"recipe {RECIPE}", version, platform.machine(), *[ln for ln in lines if ln and not ln.startswith("#")]])
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StageEnv:
    python: Path  # the environment's interpreter
    folder: Path
    built: bool  # made by this call (False: the cached one)
    seconds: float


def venv_python(folder: Path) -> Path:
    return folder / "bin" / "python"


def ensure(requirements: Path, *, progress: Progress = _no_progress, what: str = "") -> StageEnv:
    """The environment for ``requirements`` (made now unless cached)."""
    from clara_wf.containers.base_image import cache_lock

    started = time.monotonic()
    try:
        text = requirements.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{requirements} cannot be read: {getattr(err, 'strerror', None) or err}") from None
    key = env_key(text)
    folder = cache_dir() / "venvs" / key
    if (folder / COMPLETE).is_file():  # the common case: no lock, no uv, no network
        return StageEnv(venv_python(folder), folder, False, time.monotonic() - started)
    label = what or str(requirements)
    with cache_lock(f"venv-{key}"):
        if (folder / COMPLETE).is_file():  # another process made it while we waited
            return StageEnv(venv_python(folder), folder, False, time.monotonic() - started)
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted build: never used, made again
        folder.parent.mkdir(parents=True, exist_ok=True)
        uv = uv_binary()
        progress(f"{label}: creating its Python environment (once; cached as {folder}) ...")
        _uv([uv, "venv", "--quiet", "--python", sys.executable, str(folder)], label, progress)
        packages = [ln for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        if packages:
            progress(f"{label}: installing {len(packages)} requirement(s) with uv ...")
            _uv([uv, "pip", "install", "--python", str(venv_python(folder)), "-r", str(requirements)],
                label, progress)
        (folder / COMPLETE).write_text(text)
    seconds = time.monotonic() - started
    progress(f"{label}: Python environment ready in {seconds:.1f} s")
    return StageEnv(venv_python(folder), folder, True, seconds)


def _uv(argv: List[str], label: str, progress: Progress) -> None:
    """Run uv, passing each line it prints on as progress; its last lines on failure."""
    import subprocess

    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("VIRTUAL_ENV", None)  # uv would pick clara-wf's own environment otherwise
    proc = external.start(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: List[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            tail = (tail + [line])[-3:]
            progress(f"{label}: {line.strip()}")
    if proc.wait() != 0:
        raise ExternalToolError(
            f"{label}: uv could not make the environment ({' / '.join(tail) or f'exit code {proc.returncode}'}); "
            "check the requirements and that the package index is reachable"
        )


def requirements_of(source: Optional[Path]) -> Optional[Path]:
    """A stage's requirements.txt (None: it has none, so it runs with clara-wf's interpreter)."""
    if source is None:
        return None
    path = source / REQUIREMENTS
    return path if path.is_file() else None


def stage_lib() -> Path:
    """A folder holding only clara_wf's standard-library modules for stages (payload, runner),
    as the stage image has them; keyed by their content, made once."""
    digest = hashlib.sha256()
    files = [_PACKAGE / f for f in _LIB_FILES] + sorted(
        p for d in _LIB_DIRS for p in (_PACKAGE / d).rglob("*.py"))
    for path in files:
        digest.update(str(path.relative_to(_PACKAGE)).encode() + b"\0" + path.read_bytes())
    folder = cache_dir() / "stage-lib" / digest.hexdigest()[:16]
    if (folder / "clara_wf").is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        for path in files:
            target = staging / "clara_wf" / path.relative_to(_PACKAGE)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        try:
            os.rename(staging, folder)
        except OSError:  # another process made it first: same content
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder
