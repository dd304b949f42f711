"""Podman/docker for the container tests: the runtime (or the reason to skip), the cached base
image, a stage image built once per session (removed at the end), and leftover checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parent.parent
# A tag no user image has, unique per test session (parallel sessions do not share it).
TEST_IMAGE_REPOSITORY = "clara-wf-test-ai-vnet"
TEST_IMAGE_TAG = f"s{os.getpid()}"


def container_runtime():
    """The runtime the engine would use, or skip with the reason."""
    from clara_wf.containers.runtime import find_runtime
    from clara_wf.errors import ClaraWfError

    try:
        return find_runtime("auto")
    except ClaraWfError as err:
        pytest.skip(f"no container runtime: {err}")


def copy_buildable_project(dest: Path) -> Path:
    """Charts, apps (without fetched wheels), the runner the images carry, the models."""
    ignore = shutil.ignore_patterns("__pycache__", "*.whl", ".clara-wf-wheels", ".tmp-*")
    shutil.copytree(REPO / "charts", dest / "charts", ignore=ignore)
    shutil.copytree(REPO / "apps", dest / "apps", ignore=ignore)
    (dest / "clara_wf").mkdir(parents=True)
    for name in ("__init__.py", "payload.py"):
        shutil.copy(REPO / "clara_wf" / name, dest / "clara_wf" / name)
    shutil.copytree(REPO / "clara_wf" / "runner", dest / "clara_wf" / "runner", ignore=ignore)
    shutil.copytree(REPO / "test-data" / "models", dest / "test-data" / "models")
    return dest


def set_stage_image(project: Path, stage: str, repository: str, tag: str) -> None:
    """Point stages.<stage>.image at another image (a comment-keeping edit of values.yaml)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    values = project / "charts" / "clara-workflow" / "values.yaml"
    data = yaml.load(values.read_text())
    data["stages"][stage]["image"] = {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"}
    with values.open("w") as out:
        yaml.dump(data, out)


def leftovers(runtime, job_id: str) -> List[str]:
    """Containers and pods of a job still present (there must be none after a run)."""
    found = runtime.run("ps", "--all", "--quiet", "--filter", f"label=io.clara-wf.job={job_id}",
                        what="ps").stdout.split()
    if runtime.is_podman:
        found += runtime.run("pod", "ps", "--quiet", "--filter", f"label=io.clara-wf.job={job_id}",
                             what="pod ps").stdout.split()
    return found
