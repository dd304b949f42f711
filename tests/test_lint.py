"""The code base stays clean under ruff and mypy, as configured in pyproject.toml.

Both are test extras (`make setup` installs them); without them the tests skip and say so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


def test_ruff_finds_nothing():
    result = subprocess.run([_tool("ruff"), "check", "--no-cache", "clara_wf", "tests", "bench", "tools", "apps"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing_in_the_package():
    result = subprocess.run([_tool("mypy"), "--no-incremental", "--cache-dir", "/dev/null"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_uses_another_modules_private_names():
    """A leading underscore means "this module's own": another module using it is a seam to make public."""
    import re

    imported = re.compile(r"^\s*from clara_wf[\w.]* import .*\b_[a-z]\w*", re.M)
    attribute = re.compile(r"\b(?:charts|kube|local|triton_local|values_edit|ve|runs|fsio|journal|payload|dag|graph|"
                           r"workflow|wf|rendering|helm|engines|processes|run_record|cluster|ready)\._[a-z]\w*\(")
    found = []
    for path in sorted((ROOT / "clara_wf").rglob("*.py")):
        text = path.read_text()
        found += [f"{path.relative_to(ROOT)}: {m.group(0).strip()}" for m in imported.finditer(text)]
        found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in attribute.finditer(text)]
    assert not found, "\n".join(found)
