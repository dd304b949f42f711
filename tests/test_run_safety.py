"""Runs on this machine: a run writes only inside the job's folder: symlinks planted in the test data (the locks
folder, a stage's log, an output folder, run.json) that lead out of it are refused before
anything starts — with bwrap too, whose bind mounts would follow them."""

from __future__ import annotations

import shutil

import pytest
from helpers import JOB, assert_error_last_line, run_cli
from helpers.workflows import add_workflow, python_stage

pytestmark = pytest.mark.helm
SANDBOXES = ["none", pytest.param("bwrap", marks=pytest.mark.skipif(shutil.which("bwrap") is None,
                                                                   reason="bubblewrap not installed"))]

LINKS = {
    "locks folder": lambda job: job / "locks",
    "a stage's log": lambda job: job / "logs" / "s1.log",
    "an output folder": lambda job: job / "s1" / "output",
    "run.json": lambda job: job / "run.json",
    "logs folder": lambda job: job / "logs",
}


@pytest.mark.parametrize("sandbox", SANDBOXES)
@pytest.mark.parametrize("what", sorted(LINKS))
def test_a_symlink_out_of_the_job_folder_is_refused(project, tmp_path, what, sandbox):
    add_workflow(project, "one", {"s1": python_stage("print('ran')")})
    job = project / "test-data" / JOB
    (job / "s1" / "input").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me\n")
    link = LINKS[what](job)
    link.parent.mkdir(parents=True, exist_ok=True)
    target = outside / "precious" if what in ("a stage's log", "run.json") else outside
    link.symlink_to(target)
    result = run_cli("test", "one", "--engine", "local", "--sandbox", sandbox, cwd=project)
    assert_error_last_line(result, 2, "leads out of the job's folder")
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]
    assert (outside / "precious").read_text() == "keep me\n"


def test_a_symlink_inside_the_job_folder_is_fine(project):
    add_workflow(project, "one", {"s1": python_stage("print('ran')")})
    job = project / "test-data" / JOB
    (job / "s1" / "input").mkdir(parents=True)
    (job / "elsewhere").mkdir()
    (job / "logs").symlink_to(job / "elsewhere")
    result = run_cli("test", "one", "--engine", "local", "--sandbox", "none", cwd=project)
    assert result.returncode == 0, result.stderr
    assert (job / "elsewhere" / "s1.log").is_file()


def test_a_timeout_names_only_the_stages_it_stopped(project):
    """A stage that had already failed was listed as "still running" when the run timed out."""
    add_workflow(project, "two", {"quick": python_stage("raise SystemExit(3)"),
                                  "slow": python_stage("import time; time.sleep(60)")}, waits=["", ""])
    job = project / "test-data" / JOB
    for stage in ("quick", "slow"):
        (job / stage / "input").mkdir(parents=True)
    result = run_cli("test", "two", "--engine", "local", "--sandbox", "none", "--timeout", "4", cwd=project)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    if "did not finish" in last:
        assert "still running: slow)" in last, last
