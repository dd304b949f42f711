"""`clara-wf workflow list|show|remove` keep every other byte of values.yaml; missing stages are
named all at once (test), marked (workflow list, graph) and ds points at the workflows using a stage."""

from __future__ import annotations

import json

import pytest
from helpers import assert_one_line_error, run_cli, tree_digest

VALUES = "charts/clara-workflow/values.yaml"
MISSING_CT = ["dicom-reader", "recon", "dicom-writer"]


@pytest.fixture
def bare(project):
    """The chart without the reference stages other engineers add: only ai-vnet exists."""
    for name in MISSING_CT + ["ai-livertumor"]:
        if (project / "charts/clara-workflow/templates/stages" / name).exists():
            assert run_cli("ds", name, "--force", cwd=project).returncode == 0
    return project


def test_list_marks_missing_stages_and_the_default(bare):
    result = run_cli("workflow", "list", cwd=bare)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert lines["ct"].split(None, 2)[2] == "dicom-reader (missing), recon (missing), ai-vnet, dicom-writer (missing)"
    assert lines["ai-only"].endswith("ai-vnet  [default]")
    data = {w["id"]: w for w in json.loads(run_cli("workflow", "list", "-o", "json", cwd=bare).stdout)}
    assert data["ct"]["missing"] == MISSING_CT and data["ct"]["form"] == "seed" and data["ai-only"]["default"]


def test_show_prints_the_entry_as_written(bare):
    result = run_cli("workflow", "show", "ct", cwd=bare)
    assert result.returncode == 0, result.stderr
    text = (bare / VALUES).read_text()
    assert result.stdout in text and result.stdout.startswith("  ct:\n") and "waitLocks:" in result.stdout
    assert "missing stage(s): dicom-reader, recon, dicom-writer" in result.stderr
    assert_one_line_error(run_cli("workflow", "show", "nope", cwd=bare), 2, "no workflow 'nope'")


def test_remove_keeps_every_other_byte(bare):
    values = bare / VALUES
    text = values.read_text().replace("  recon-only:\n", "  # the recon stage alone\n  recon-only:\n", 1)
    values.write_text(text)
    shown = run_cli("workflow", "show", "recon-only", cwd=bare).stdout
    result = run_cli("workflow", "remove", "recon-only", cwd=bare)
    assert result.returncode == 0, result.stderr
    assert values.read_text() == text.replace("  # the recon stage alone\n" + shown, "", 1)
    assert "recon-only" not in run_cli("workflow", "list", cwd=bare).stdout


def test_remove_refusals_change_nothing(bare):
    before = tree_digest(bare)
    assert_one_line_error(run_cli("workflow", "remove", "ai-only", cwd=bare), 2, "is the chart's default", "--force")
    assert_one_line_error(run_cli("workflow", "remove", "nope", cwd=bare), 2, "no workflow 'nope'")
    assert tree_digest(bare) == before
    assert run_cli("workflow", "remove", "ai-only", "--force", cwd=bare).returncode == 0


def test_ds_of_a_stage_in_use_points_at_the_workflow_commands(bare):
    assert_one_line_error(run_cli("ds", "ai-vnet", cwd=bare), 2, "used by workflow(s) ", "ai-only, ct;",
                          "`clara-wf workflow show ", "`clara-wf workflow remove ")


@pytest.mark.helm
def test_test_names_every_missing_stage(bare):
    assert_one_line_error(run_cli("test", "ct", "--engine", "local", cwd=bare), 2,
                          "workflow 'ct' uses stages the chart does not have: dicom-reader, recon, dicom-writer")


def test_graph_marks_missing_stages(bare):
    text = run_cli("graph", "ct", cwd=bare).stdout
    assert "recon         <- dicom-reader  [missing: `clara-wf cs recon`]" in text
    assert "ai-vnet       <- recon\n" in text
    dot = run_cli("graph", "ct", "--format", "dot", cwd=bare).stdout
    assert '"recon" [label="recon (missing)", style="dashed,filled"' in dot
    mermaid = run_cli("graph", "ct", "--format", "mermaid", cwd=bare).stdout
    assert "recon (missing)" in mermaid and "classDef missing" in mermaid
