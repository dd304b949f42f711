"""Every reference stage (apps/*) is buildable as it stands: a requirements.txt, a Dockerfile
whose base image is a build argument and whose COPY sources exist and pass its
.dockerignore, a chart stage folder and a values block pointing at the app."""

from __future__ import annotations

import re

import pytest
from helpers.triton import REPO

STAGES = sorted(p.name for p in (REPO / "apps").iterdir() if (p / "Dockerfile").is_file())
# A stage whose image runs another stage's program (values: source) - ai-livertumor runs ai-vnet's.
PROGRAM = {"ai-livertumor": "ai-vnet"}


def test_the_reference_stages_are_there():
    assert {"ai-vnet", "dicom-reader", "dicom-writer", "recon", "ai-livertumor"} <= set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_is_buildable(stage):
    app = REPO / "apps" / stage
    assert (app / "requirements.txt").is_file()
    dockerfile = (app / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    allowed = [line[1:].rstrip("/") for line in (app / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")]
    copied = []
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            copied += line.split()[1:-1]
    assert f"apps/{PROGRAM.get(stage, stage)}/main.py" in copied and "clara_wf/runner" in copied and "clara_wf/payload.py" in copied
    for source in (c.rstrip("/") for c in copied):
        assert (REPO / source).exists(), f"{stage}: Dockerfile copies {source}, which does not exist"
        assert any(source == a or source.startswith(a + "/") for a in allowed), f"{stage}: .dockerignore hides {source}"
    assert (REPO / "charts" / "clara-workflow" / "templates" / "stages" / stage / "container.yaml").is_file()
    values = (REPO / "charts" / "clara-workflow" / "values.yaml").read_text()
    assert f'source: "apps/{PROGRAM.get(stage, stage)}"' in values and f'dockerfile: "apps/{stage}/Dockerfile"' in values


@pytest.mark.parametrize("stage", STAGES)
def test_stage_requirements_are_in_the_local_extra(stage):
    """Until per-stage environments exist, the local engine runs every stage in clara-wf's venv."""
    pyproject = (REPO / "pyproject.toml").read_text().lower()
    for line in (REPO / "apps" / stage / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name = re.split(r"[<>=\[ ;]", line, maxsplit=1)[0].lower()
            assert f'"{name}' in pyproject, f"{stage} needs {name}: add it to the local extra in pyproject.toml"
