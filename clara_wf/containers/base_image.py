"""A local base image for the stage images, built once from Debian packages.

No container registry is reachable on an air-gapped machine (nor on this project's CI), so
``python:3.11-slim`` cannot be pulled. Instead: ``mmdebstrap --variant=minbase
--include=python3,python3-venv,... bookworm`` writes a root file system as a tarball, and
``podman import`` (``docker import``) turns it into ``localhost/clara-wf-base:<key>``.

Content-keyed cache: the key hashes everything that decides the image (suite, packages,
architecture, recipe version). The image itself is the cache (the runtime's image store is
machine-wide, so a second run, another checkout and CI on the same machine reuse it); the
tarball is kept in the cache folder too, so an image removed by hand comes back in seconds.
Builds are serialised by a file lock, so parallel test runs build it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from clara_wf import external, fsio
from clara_wf.containers.runtime import Runtime
from clara_wf.errors import ExternalToolError

CACHE_ENV = "CLARA_WF_CACHE"
BASE_ENV = "CLARA_WF_BASE_IMAGE"
NAME = "clara-wf-base"
SUITE = "bookworm"  # Python 3.11, as on the default python:3.11-slim base
# python3-venv: Dockerfiles make a venv (ensurepip brings pip, offline); ca-certificates: pip
# may still reach an index when one is reachable.
PACKAGES = ("python3", "python3-venv", "ca-certificates")
RECIPE = 1  # bump when the way the image is made changes
ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BaseImage:
    ref: str  # localhost/clara-wf-base:<key>
    python: str  # "3.11": what the image's python3 is (wheels must match it)
    built: bool  # made by this call (False: reused)
    seconds: float


def cache_dir() -> Path:
    """Machine-wide cache (base image tarballs, wheels): $CLARA_WF_CACHE, else $XDG_CACHE_HOME/clara-wf."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clara-wf"


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def recipe(suite: str = SUITE, packages=PACKAGES) -> dict:
    return {"recipe": RECIPE, "suite": suite, "variant": "minbase", "packages": sorted(packages), "arch": _arch()}


def key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Serialise builds of one cached thing across processes (parallel test runs, CI)."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with fsio.lock(folder / f".{name}.lock", create=True):
        yield


def python_version(runtime: Runtime, ref: str) -> str:
    out = runtime.run("run", "--rm", "--network", "none", ref, "python3", "-c",
                      "import sys; print('%d.%d' % sys.version_info[:2])",
                      what=f"python3 in {ref}", hint="rebuild the base image (tools/base_image.py --rebuild)").stdout
    return out.strip()


def ensure(runtime: Runtime, *, rebuild: bool = False, progress: Progress = lambda _m: None) -> BaseImage:
    """The local base image, built (mmdebstrap + import) only when missing."""
    started = time.monotonic()
    spec = recipe()
    ref = f"localhost/{NAME}:{key(spec)}"
    meta_file = cache_dir() / "base" / f"{key(spec)}.json"
    with cache_lock("base-image"):
        if not rebuild and runtime.image_exists(ref):
            python = _cached_python(meta_file) or python_version(runtime, ref)
            return BaseImage(ref, python, built=False, seconds=time.monotonic() - started)
        tarball = meta_file.with_suffix(".tar")
        if rebuild or not tarball.is_file():
            debootstrap(spec, tarball, progress)
        progress(f"importing {tarball.name} as {ref} ...")
        runtime.run("import", "--change", f"ENV PATH={ENV_PATH}", "--change", 'CMD ["python3"]',
                    "--message", f"clara-wf base image: mmdebstrap {spec['variant']} {spec['suite']} "
                    f"+ {','.join(spec['packages'])}", str(tarball), ref,
                    what=f"{runtime.name} import of the base image", hint="check the runtime (podman info)")
        python = python_version(runtime, ref)
        fsio.atomic_write(meta_file, json.dumps({**spec, "ref": ref, "python": python}, indent=2) + "\n")
    return BaseImage(ref, python, built=True, seconds=time.monotonic() - started)


def _cached_python(meta_file: Path) -> Optional[str]:
    try:
        return str(json.loads(meta_file.read_text())["python"])
    except (OSError, ValueError, KeyError):
        return None


def debootstrap(spec: dict, tarball: Path, progress: Progress) -> None:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ExternalToolError("mmdebstrap is not installed, so no local base image can be made: "
                                "apt-get install mmdebstrap (make setup does, as root), "
                                f"or pass --base-image IMAGE / set {BASE_ENV} to an image you have")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".tar.partial")
    progress(f"building the base image's root file system from Debian {spec['suite']} "
             f"({', '.join(spec['packages'])}); about a minute, once per machine ...")
    # Trim what a stage never needs (docs, man pages, locales) for a smaller image.
    external.run([mmdebstrap, "--quiet", "--variant=minbase", f"--include={','.join(spec['packages'])}",
                  f"--architectures={spec['arch']}",
                  *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "info", "locale")),
                  "--format=tar", spec["suite"], str(partial)],
                 what="mmdebstrap of the base image",
                 hint="mmdebstrap needs a Debian mirror (deb.debian.org) and root or unshare")
    os.replace(partial, tarball)


def main(argv=None) -> int:
    """``tools/base_image.py``: build (or find) the base image and print its name."""
    import argparse
    import sys

    from clara_wf.containers.runtime import find_runtime
    from clara_wf.errors import ClaraWfError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", default="auto", help="auto, podman or docker")
    parser.add_argument("--rebuild", action="store_true", help="build again even when cached")
    args = parser.parse_args(argv)
    try:
        image = ensure(find_runtime(args.runtime), rebuild=args.rebuild,
                       progress=lambda message: print(f"[base_image] {message}", file=sys.stderr))
    except ClaraWfError as err:
        print(f"base_image: error: {err}", file=sys.stderr)
        return err.exit_code
    how = "built" if image.built else "cached"
    print(f"[base_image] {how} in {image.seconds:.1f} s (python {image.python})", file=sys.stderr)
    print(image.ref)
    return 0
