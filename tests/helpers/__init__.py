"""Helpers every test may import (``from helpers import render_chart, run_cli, ...``).

``tests/`` is on the import path (pyproject's ``pythonpath``), so these are plain modules:
chart rendering with strict validation (``chart``), the real CLI as a user runs it
(``cli``), project copies (``project``) and the run-time values a real run passes
(``values``). Fixtures live in ``conftest.py``.
"""

from helpers.chart import (
    KUBE_VERSION,
    HelmError,
    by_kind,
    env_of,
    helm_binary,
    helm_major,
    job_containers,
    render_chart,
    validate_strictly,
)
from helpers.cli import assert_error_last_line, assert_one_line_error, run_cli
from helpers.project import JOB, REPO, copy_project, tree_digest
from helpers.values import run_values

__all__ = [
    "JOB", "KUBE_VERSION", "REPO", "HelmError", "assert_error_last_line", "assert_one_line_error", "by_kind",
    "copy_project", "env_of", "helm_binary", "helm_major", "job_containers", "render_chart", "run_cli",
    "run_values", "tree_digest", "validate_strictly",
]
