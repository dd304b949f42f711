"""The real command line, run as a user runs it (a separate process), and its error contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional


def run_cli(*args: str, cwd: Path, env: Optional[dict] = None, input: Optional[str] = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("CLARA_WF_CHART_DIR", None) if env is None or "CLARA_WF_CHART_DIR" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "clara_wf", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        input=input, timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("clara-wf: "), lines
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def assert_error_last_line(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    """Commands that show progress first (engine choice, Triton start) still end in one error line."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("clara-wf: "), result.stderr
    for fragment in fragments:
        assert fragment in last, (fragment, last)
