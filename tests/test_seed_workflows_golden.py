"""Seed-form workflows render byte-identical manifests to the recorded ones (tests/golden).

The golden files were rendered before DAG workflows (`io`) were added to the chart; this
test is what proves the extension is backward-compatible. tests/seed_render.py rewrites
them, for a change that is meant to alter these manifests.
"""

from __future__ import annotations

import pytest
from helpers import helm_binary
from helpers.seed_render import GOLDEN, SEED_WORKFLOWS, render_all

pytestmark = pytest.mark.helm


@pytest.fixture(scope="module")
def rendered():
    return render_all(helm_binary())


@pytest.mark.parametrize("workflow", SEED_WORKFLOWS)
def test_seed_workflow_renders_byte_identical(rendered, workflow):
    assert rendered[workflow] == (GOLDEN / f"{workflow}.yaml").read_text()
