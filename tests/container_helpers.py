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


def remove_job(runtime, job_id: str) -> None:
    """A test's last resort (it failed or was interrupted): nothing of its job stays."""
    if runtime.is_podman:
        for pod in runtime.run("pod", "ps", "--quiet", "--filter", f"label=io.clara-wf.job={job_id}",
                               what="pod ps").stdout.split():
            runtime.run("pod", "rm", "--force", "--time", "0", pod, what="pod rm", ok_codes=range(256))
    for container in leftovers(runtime, job_id):
        runtime.run("rm", "--force", container, what="rm", ok_codes=range(256))


def remove_stale_test_images(runtime) -> None:
    """Test images of sessions that died before their clean-up (their pid is gone)."""
    out = runtime.run("images", "--format", "{{.Repository}}:{{.Tag}}", what="images").stdout.split()
    for ref in out:
        name, _, tag = ref.rpartition(":")
        if name.endswith("/" + TEST_IMAGE_REPOSITORY) and tag.startswith("s") and tag[1:].isdigit():
            if tag != TEST_IMAGE_TAG and not Path(f"/proc/{tag[1:]}").exists():
                runtime.run("rmi", "--force", ref, what="rmi", ok_codes=range(256))


@pytest.fixture(scope="session")
def container_rt():
    return container_runtime()


@pytest.fixture(scope="session")
def stage_image(container_rt, tmp_path_factory):
    """The ai-vnet image under a session-unique tag, built for real by `--build`'s code (the
    base image and the wheels are cached per machine); removed when the session ends."""
    from clara_wf.containers import build
    from clara_wf.project import find_project
    from clara_wf.workflow import plan_run

    job = "00000000-0000-0000-0000-000000000000"
    remove_stale_test_images(container_rt)
    project = copy_buildable_project(tmp_path_factory.mktemp("image") / "project")
    set_stage_image(project, "ai-vnet", TEST_IMAGE_REPOSITORY, TEST_IMAGE_TAG)
    (project / "test-data" / job).mkdir(parents=True)
    ref = f"{TEST_IMAGE_REPOSITORY}:{TEST_IMAGE_TAG}"
    try:
        build.build_stage_images(plan_run(find_project(start=project), "ai-only", job), container_rt)
        yield ref
    finally:
        container_rt.run("rmi", "--force", ref, what="rmi", ok_codes=range(256))
