"""`clara-wf test --build`: docker build of the stage images that have a build context."""

from __future__ import annotations

import shutil
from typing import Iterator

from clara_wf import external
from clara_wf.errors import ExternalToolError, InputError
from clara_wf.workflow import WorkflowRun


def build_stage_images(run: WorkflowRun) -> Iterator[str]:
    """Build each active stage's image; yields progress lines. No docker: one message, no build."""
    todo = [(name, values) for name, values in run.values.items() if (values.get("build") or {}).get("context")]
    if not todo:
        yield "--build: no stage of this workflow has a build context (stages.<name>.build)"
        return
    docker = shutil.which("docker")
    if docker is None:
        yield "--build: docker is not installed here; skipping the image builds (the images must already be on the nodes)"
        return
    try:
        external.run([docker, "info", "--format", "{{.ServerVersion}}"], what="docker info")
    except ExternalToolError as err:
        yield f"--build: no Docker engine answers ({err}); skipping the image builds"
        return
    root = run.project.root
    for name, values in todo:
        build = values["build"]
        context = (root / str(build["context"])).resolve()
        dockerfile = (root / str(build.get("dockerfile") or context / "Dockerfile")).resolve()
        if not context.is_dir() or not dockerfile.is_file():
            raise InputError(f"stage {name!r}: build context {context} or Dockerfile {dockerfile} is missing")
        image = f"{values['image']['repository']}:{values['image'].get('tag', 'latest')}"
        yield f"--build: docker build -t {image} -f {dockerfile} {context}"
        external.run([docker, "build", "-t", image, "-f", str(dockerfile), str(context)],
                     what=f"docker build of stage {name}", hint="fix the Dockerfile or build the image by hand")
        yield f"--build: {image} built"
