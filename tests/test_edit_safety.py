"""Edits of the chart (cs, ds, import) land whole or change nothing — under kill -9 at any
step, concurrent commands and broken markers — and the next command cleans up after a crash."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from crash_helpers import leftovers, run_crashing, spread, steps_of
from helpers import REPO, assert_one_line_error, copy_project, run_cli, tree_digest

VALUES = "charts/clara-workflow/values.yaml"
STAGES = "charts/clara-workflow/templates/stages"
PIPELINE = str(REPO / "examples" / "pipelines" / "linear-ct.yaml")

# (command, what the chart holds before it, how a re-run after it landed answers)
EDITS = {
    "cs": (["cs", "kstage"], [], "already exists"),
    "ds": (["ds", "kstage", "--force"], [["cs", "kstage"]], "no stage 'kstage'"),
    "import": (["import", PIPELINE], [], None),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_kill_9_at_any_step_leaves_the_edit_whole_or_undone(edit, tmp_path):
    """Killed before step k (k spread over all steps), the next run of the same command
    recovers: it ends with the chart exactly as one clean run leaves it, and no scratch."""
    args, setup, landed_answer = EDITS[edit]

    def fresh(name: str) -> Path:
        project = copy_project(tmp_path / name)
        for step in setup:
            assert run_cli(*step, cwd=project).returncode == 0
        return project

    clean = fresh("clean")
    total = steps_of(args, clean)
    expected = tree_digest(clean)
    assert total > 5
    for k in spread(total, 6):
        project = fresh(f"k{k}")
        crashed = run_crashing(args, project, k)
        assert crashed.returncode == -9, (k, crashed.stderr)
        again = run_cli(*args, cwd=project)
        if again.returncode != 0:  # killed after the change counted as done: it stays done
            assert landed_answer and landed_answer in again.stderr, (k, again.stderr)
        assert leftovers(project) == [], k
        assert tree_digest(project) == expected, k


def test_import_and_cs_at_the_same_time_both_land(project):
    """The issue's race: `import & sleep 0.22; cs other` lost `other` (import's rollback rewrote
    values.yaml). import now holds the chart lock across its plan and apply; cs waits for it."""
    for round_ in range(3):
        stage = f"other-{round_}"
        importer = subprocess.Popen([sys.executable, "-m", "clara_wf", "import", PIPELINE, "--force"], cwd=project,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.05 * round_)
        cs = run_cli("cs", stage, cwd=project)
        _, err = importer.communicate(timeout=120)
        assert importer.returncode == 0, err
        assert cs.returncode == 0, cs.stderr
        listed = run_cli("ls", cwd=project).stdout.split()
        assert stage in listed and "vnet-ct" in listed
        text = (project / VALUES).read_text()
        assert f"##BEGIN_{stage}##" in text and "clara-wf import: pipeline" in text
    assert leftovers(project) == []


def _move_line(text: str, line: str, before: str) -> str:
    lines = text.splitlines(keepends=True)
    moved = next(x for x in lines if x.strip() == line)
    lines.remove(moved)
    at = next(i for i, x in enumerate(lines) if x.strip() == before)
    return "".join(lines[:at] + [moved] + lines[at:])


@pytest.mark.parametrize("breakage, message", [
    # The case: bstage's BEGIN moved above ai-vnet's block.
    (lambda t: _move_line(t, "##BEGIN_bstage##", "##BEGIN_ai-vnet##"), "the markers cross"),
    (lambda t: t.replace("  ##END_bstage##\n", "  ##END_bstage##\n  ##END_bstage##\n"), "appears"),
    (lambda t: t.replace("  ##END_bstage##\n", ""), "has no ##END_bstage##"),
    (lambda t: _move_line(t, "##END_bstage##", "##BEGIN_bstage##"), "comes before"),
    # A pair around nothing of its own: the block holds no stages.bstage.
    (lambda t: _move_line(_move_line(t, "##BEGIN_bstage##", "##BEGIN_ai-vnet##"), "##END_bstage##", "##BEGIN_ai-vnet##"),
     "does not hold stages.bstage"),
], ids=["crossing", "duplicated", "unpaired", "reversed", "misplaced"])
def test_ds_removes_exactly_its_block_or_refuses_broken_markers(project, breakage, message):
    assert run_cli("cs", "bstage", cwd=project).returncode == 0
    values = project / VALUES
    values.write_text(breakage(values.read_text()))
    before = tree_digest(project)
    assert_one_line_error(run_cli("ds", "bstage", "--force", cwd=project), 2, message)
    assert tree_digest(project) == before
    assert "ai-vnet:" in values.read_text()


def test_interrupted_cs_then_cs_again_works_and_scratch_is_gone(project):
    """A crash leaves a scratch folder, a values temp file and a journal; `cs X` again works."""
    crashed = run_crashing(["cs", "kstage"], project, 12)
    assert crashed.returncode == -9
    again = run_cli("cs", "kstage", cwd=project)
    assert again.returncode == 0, again.stderr
    assert leftovers(project) == []
    assert (project / STAGES / "kstage" / "container.yaml").is_file()


def test_a_journal_whose_file_was_edited_since_is_not_rolled_back_over_the_edit(project):
    for k in range(steps_of(["cs", "probe"], copy_project(project.parent / "probe")), 0, -1):
        shutil.rmtree(project)
        copy_project(project)
        run_crashing(["cs", "kstage"], project, k)  # the last step before the journal goes: values.yaml written
        if (project / "charts/clara-workflow/.clara-wf-journal.json").exists() and "kstage" in (project / VALUES).read_text():
            break
    else:
        pytest.fail("no step between writing values.yaml and removing the journal")
    values = project / VALUES
    values.write_text(values.read_text() + "# my own edit\n")
    before = tree_digest(project)
    assert_one_line_error(run_cli("cs", "other", cwd=project), 2, "changed since", ".clara-wf-journal.json")
    assert tree_digest(project) == before
