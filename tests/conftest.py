"""Shared fixtures: a temporary copy of the project, real `helm template`, the real CLI.

Chart tests follow Apache Airflow's chart tests: ``render_chart()`` runs the real helm
binary and the assertions are made on the parsed documents.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import pytest
import yaml

from clara_wf.external import find_program
from clara_wf.helm import HELM_ENV, set_string_args

REPO = Path(__file__).resolve().parents[1]
JOB = "00000000-0000-0000-0000-000000000000"


def helm_binary() -> str:
    return find_program("helm", HELM_ENV)


def helm_major() -> int:
    out = subprocess.run([helm_binary(), "version", "--short"], capture_output=True, text=True, check=True).stdout
    return int(out.strip().lstrip("v").split(".")[0])


class HelmError(Exception):
    pass


def render_chart(
    chart: Path = REPO / "charts" / "clara-workflow",
    *,
    values: Optional[dict] = None,
    set_string: Optional[Dict[str, str]] = None,
    show_only: Iterable[str] = (),
    release: str = "test-wf",
    namespace: str = "default",
) -> List[dict]:
    """``helm template`` the chart; the parsed documents, or HelmError with helm's message."""
    argv = [helm_binary(), "template", release, str(chart), "--namespace", namespace]
    tmp = None
    if values:
        import tempfile

        tmp = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        yaml.safe_dump(values, tmp)
        tmp.close()
        argv += ["--values", tmp.name]
    argv += set_string_args(set_string or {})
    for template in show_only:
        argv += ["--show-only", template]
    try:
        result = subprocess.run(argv, capture_output=True, text=True)
    finally:
        if tmp:
            os.unlink(tmp.name)
    if result.returncode != 0:
        raise HelmError(result.stderr.strip())
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: List[dict], kind: str) -> List[dict]:
    return [d for d in docs if d["kind"] == kind]


def job_containers(docs: List[dict]) -> List[dict]:
    (job,) = by_kind(docs, "Job")
    return job["spec"]["template"]["spec"]["containers"]


def env_of(container: dict) -> Dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


# The reference stages this project ships beyond the guide's starting point (ai-vnet only).
REFERENCE_STAGES = ("dicom-reader", "dicom-writer", "recon", "ai-livertumor")


def copy_project(dest: Path, reference_stages: bool = False) -> Path:
    """A private copy of the project's charts and sample job, for tests that edit or run them.

    By default the copy is the guide's starting point - ai-vnet is the only stage - so the
    tests can walk through the guide (`cs dicom-reader`, importing a pipeline whose
    operators are named dicom-reader ...); ``reference_stages=True`` keeps every shipped stage.
    """
    shutil.copytree(REPO / "charts", dest / "charts", ignore=shutil.ignore_patterns(".tmp-*"))
    (dest / "test-data" / JOB / "ai-vnet" / "input").mkdir(parents=True)
    if not reference_stages:
        from clara_wf import charts
        from clara_wf.project import find_project

        project = find_project(start=dest)
        for name in REFERENCE_STAGES:
            if (project.stages_dir / name).is_dir():
                charts.delete_stage(project, name, force=True)
    return dest


@pytest.fixture
def project(tmp_path) -> Path:
    return copy_project(tmp_path / "project")


def tree_digest(root: Path) -> str:
    """Everything under root (names, modes and bytes): equal digests mean nothing changed."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def run_cli(*args: str, cwd: Path, env: Optional[dict] = None, input: Optional[str] = None) -> subprocess.CompletedProcess:
    """The real command line, as a user runs it (a separate process)."""
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


# Fixtures of the container tests (podman/docker; session-wide: one stage image per session).
from container_helpers import container_rt, stage_image  # noqa: E402,F401
