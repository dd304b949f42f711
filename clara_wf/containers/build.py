"""`clara-wf test --build`: build the image of each active stage that has a build context.

A stage's values say how: ``build.context`` and ``build.dockerfile`` (relative to the
project) and ``image.repository`` / ``image.tag`` (the tag built). Each Dockerfile takes
its base image as ``ARG BASE_IMAGE`` (default a public Python image):

- ``--base-image auto`` (default): the local Debian base (``base_image.ensure``) when
  ``mmdebstrap`` is installed (a machine with no registry, like this project's CI), else
  the Dockerfile's own default; ``local`` / ``dockerfile`` force one; anything else is an
  image reference passed as it is.
- Python dependencies: a stage whose Dockerfile folder has a ``wheels/`` folder gets the
  wheels of its ``requirements.txt`` there, downloaded on the host with pip into a
  machine-wide cache keyed by the requirements and the image's Python; its Dockerfile
  then installs with ``pip --no-index`` and the build never reaches the network (pip
  inside a build cannot verify this machine's TLS proxy; hospitals are air-gapped).
  Wheels put there by hand (no ``.clara-wf-wheels`` stamp) are left alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from clara_wf import external
from clara_wf.containers import base_image
from clara_wf.containers.runtime import Runtime
from clara_wf.errors import InputError
from clara_wf.workflow import WorkflowRun

BASE_CHOICES = ("auto", "local", "dockerfile")
WHEELS_STAMP = ".clara-wf-wheels"
# pip tags for a Python other than the host's (Linux images, glibc >= 2.17).
MANYLINUX = ("manylinux2014", "manylinux_2_17", "manylinux_2_24", "manylinux_2_27", "manylinux_2_28")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class StageBuild:
    stage: str
    image: str  # repository:tag, as the chart renders it
    context: Path
    dockerfile: Path
    requirements: Optional[Path]  # next to the Dockerfile
    wheels: Optional[Path]  # the Dockerfile folder's wheels/ (offline install), when it has one

    def command(self, runtime_name: str = "docker") -> str:
        """The build command line, as the user would type it from the project root."""
        return external.format_command([runtime_name, "build", "-t", self.image, "-f", str(self.dockerfile),
                                        str(self.context)])


def image_ref(values: dict) -> str:
    image = values.get("image") or {}
    return f"{image.get('repository', '')}:{image.get('tag', 'latest')}"


def stage_builds(run: WorkflowRun, *, strict: bool = True) -> List[StageBuild]:
    """The active stages that have a build context, checked (``strict`` False: those that
    cannot be built, e.g. a fresh `cs` stage with no app folder yet, are left out)."""
    root = run.project.root
    builds = []
    for name, values in run.values.items():
        build = values.get("build") or {}
        if not build.get("context"):
            continue
        context = (root / str(build["context"])).resolve()
        dockerfile = (root / str(build.get("dockerfile") or Path(str(build["context"])) / "Dockerfile")).resolve()
        if not context.is_dir() or not dockerfile.is_file():
            if not strict:
                continue
            if not context.is_dir():
                raise InputError(f"stage {name!r}: build context {context} is not a folder (stages.{name}.build.context)")
            raise InputError(f"stage {name!r}: Dockerfile {dockerfile} is missing (stages.{name}.build.dockerfile)")
        requirements = dockerfile.parent / "requirements.txt"
        wheels = dockerfile.parent / "wheels"
        builds.append(StageBuild(name, image_ref(values), context, dockerfile,
                                 requirements if requirements.is_file() else None,
                                 wheels if wheels.is_dir() and requirements.is_file() else None))
    return builds


def choose_base(runtime: Runtime, requested: str, progress: Progress) -> Optional[base_image.BaseImage]:
    """The base image to pass as BASE_IMAGE (None: the Dockerfile's default)."""
    requested = requested or os.environ.get(base_image.BASE_ENV) or "auto"
    if requested == "dockerfile" or (requested == "auto" and shutil.which("mmdebstrap") is None):
        return None
    if requested in ("auto", "local"):
        return base_image.ensure(runtime, progress=progress)
    return base_image.BaseImage(requested, _python_of(runtime, requested), built=False, seconds=0.0)


def _python_of(runtime: Runtime, ref: str) -> str:
    if runtime.image_exists(ref):
        return base_image.python_version(runtime, ref)
    match = re.search(r"python:(\d+\.\d+)", ref)
    return match.group(1) if match else "%d.%d" % sys.version_info[:2]


def dockerfile_python(dockerfile: Path) -> str:
    """The Python of a Dockerfile's default base (``ARG BASE_IMAGE=python:3.11-slim``)."""
    match = re.search(r"python:(\d+\.\d+)", dockerfile.read_text(errors="replace"))
    return match.group(1) if match else "%d.%d" % sys.version_info[:2]


def fetch_wheels(requirements: Path, python: str, progress: Progress) -> Path:
    """The wheels of a requirements file for an image's Python, from the machine-wide cache."""
    spec = {"requirements": requirements.read_text(), "python": python, "machine": platform.machine()}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    folder = base_image.cache_dir() / "wheels" / key
    with base_image.cache_lock(f"wheels-{key}"):
        if (folder / WHEELS_STAMP).is_file():
            return folder
        partial = folder.with_name(key + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                "--only-binary=:all:", "-r", str(requirements), "-d", str(partial)]
        if python != "%d.%d" % sys.version_info[:2] or sys.platform != "linux":
            tags = [f"{tag}_{platform.machine()}" for tag in MANYLINUX]
            argv += ["--python-version", python, "--implementation", "cp",
                     *(a for tag in tags for a in ("--platform", tag))]
        progress(f"downloading the wheels of {requirements.name} for Python {python} (cached for the next builds) ...")
        external.run(argv, what=f"pip download of {requirements}",
                     hint="check the package index is reachable, or put the wheels in the stage's wheels/ folder by hand")
        (partial / WHEELS_STAMP).write_text(json.dumps(spec) + "\n")
        os.replace(partial, folder)
    return folder


def place_wheels(cached: Path, target: Path) -> int:
    """Make ``target`` hold exactly the cached wheels (hard links where possible); returns how many."""
    stamp = target / WHEELS_STAMP
    wanted = {p.name: p for p in cached.glob("*.whl")}
    if stamp.is_file() and stamp.read_text() == (cached / WHEELS_STAMP).read_text():
        if {p.name for p in target.glob("*.whl")} == set(wanted):
            return len(wanted)
    for old in target.glob("*.whl"):
        if old.name not in wanted:
            old.unlink()
    for name, source in wanted.items():
        dest = target / name
        if dest.exists():
            continue
        try:
            os.link(source, dest)
        except OSError:  # another file system
            shutil.copy2(source, dest)
    shutil.copy2(cached / WHEELS_STAMP, stamp)
    return len(wanted)


def _lists_requirements(requirements: Path) -> bool:
    """A requirements file naming at least one package (pip download refuses an empty one)."""
    return any(line.split("#", 1)[0].strip() for line in requirements.read_text(errors="replace").splitlines())


def _hand_placed(wheels: Path) -> bool:
    return any(wheels.glob("*.whl")) and not (wheels / WHEELS_STAMP).is_file()


def build_stage_images(run: WorkflowRun, runtime: Runtime, *, base: str = "auto",
                       progress: Progress = lambda _m: None) -> dict:
    """Build every active stage's image; returns timings (seconds per phase and per stage)."""
    builds = stage_builds(run)
    timings: dict = {"images": {}}
    if not builds:
        progress("--build: no stage of this workflow has a build context (stages.<name>.build)")
        return timings
    t0 = time.monotonic()
    chosen = choose_base(runtime, base, progress)
    timings["base_image_s"] = time.monotonic() - t0
    if chosen is not None:
        progress(f"--build: base image {chosen.ref} ({'built' if chosen.built else 'cached'}, Python {chosen.python})")
    for build in builds:
        t0 = time.monotonic()
        python = chosen.python if chosen else dockerfile_python(build.dockerfile)
        if build.wheels is not None and build.requirements is not None and _lists_requirements(build.requirements):
            if _hand_placed(build.wheels):
                progress(f"--build: {build.stage}: using the wheels already in {build.wheels}")
            else:
                count = place_wheels(fetch_wheels(build.requirements, python, progress), build.wheels)
                progress(f"--build: {build.stage}: {count} wheels in {build.wheels} (offline install)")
        argv = ["build", "-t", build.image, "-f", str(build.dockerfile)]
        if chosen is not None:
            argv += ["--build-arg", f"BASE_IMAGE={chosen.ref}"]
        ignore = Path(str(build.dockerfile) + ".dockerignore")
        if runtime.is_podman and ignore.is_file():
            argv += ["--ignorefile", str(ignore)]  # BuildKit finds it by itself; podman 4.3 does not
        progress(f"--build: {runtime.name} build -t {build.image} -f {build.dockerfile} {build.context}")
        runtime.run(*argv, str(build.context), what=f"{runtime.name} build of stage {build.stage}",
                    hint="fix the Dockerfile, or build the image by hand")
        seconds = time.monotonic() - t0
        timings["images"][build.stage] = seconds
        progress(f"--build: {build.image} built ({seconds:.1f} s)")
    return timings


def build_before_run(run: WorkflowRun, *, runtime: str = "auto", base: str = "auto",
                     progress: Progress = lambda _m: None, required: bool = True) -> dict:
    """``--build``: find the runtime and build; with ``required`` False, no runtime is a note."""
    from clara_wf.containers.runtime import find_runtime
    from clara_wf.errors import ExternalToolError

    if not stage_builds(run):
        progress("--build: no stage of this workflow has a build context (stages.<name>.build)")
        return {}
    try:
        found = find_runtime(runtime)
    except ExternalToolError as err:
        if required:
            raise
        progress(f"--build: skipping the image builds ({err}); the images must already be where the stages run")
        return {}
    return build_stage_images(run, found, base=base, progress=progress)


def missing_images(runtime: Runtime, images: dict) -> List[str]:
    """The stages (of ``{stage: image}``) whose image is not in the runtime's local store."""
    return [stage for stage, image in images.items() if not runtime.image_exists(image)]
