"""`clara-wf ls`, `cs` and `ds` on a private copy of the project."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_cli, tree_digest

from clara_wf import charts, fsio
from clara_wf.errors import InputError
from clara_wf.project import find_project

VALUES = "charts/clara-workflow/values.yaml"
STAGES = "charts/clara-workflow/templates/stages"


def test_ls_lists_stage_folders_sorted_without_template(project):
    (project / STAGES / "zeta").mkdir()
    (project / STAGES / "alpha").mkdir()
    result = run_cli("ls", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["ai-vnet", "alpha", "zeta"]
    for alias in ("list", "list_stages"):
        assert run_cli(alias, cwd=project).stdout == result.stdout
    assert json.loads(run_cli("ls", "--output", "json", cwd=project).stdout) == ["ai-vnet", "alpha", "zeta"]


def test_cs_copies_the_template_and_adds_values_between_markers(project):
    before = (project / VALUES).read_bytes()
    result = run_cli("cs", "dicom-reader", cwd=project)
    assert result.returncode == 0, result.stderr
    stage_dir = project / STAGES / "dicom-reader"
    assert result.stdout.splitlines()[:2] == [  # the original's lines; then the app and next steps
        f"Stage 'dicom-reader' is created at: {stage_dir}",
        f"Default values for Stage 'dicom-reader' are added to: {project / VALUES}",
    ]
    assert sorted(p.name for p in stage_dir.iterdir()) == ["container.yaml", "volume.yaml"]
    container = (stage_dir / "container.yaml").read_text()
    assert '{{- define "stages.dicom-reader.container" }}' in container
    assert '$stageName := "dicom-reader"' in container
    assert "[[" not in container and "{{ $stage.appDir | quote }}" in container  # Helm's braces untouched
    after = (project / VALUES).read_bytes()
    assert after.startswith(before)  # every earlier byte kept: the block is appended to stages:
    added = after[len(before):].decode()
    assert added.splitlines()[0] == "  ##BEGIN_dicom-reader##"
    assert added.splitlines()[-1] == "  ##END_dicom-reader##"
    values = charts.stage_values(find_project(start=project))
    assert values["dicom-reader"]["lockName"] == "dicom-reader.lock"
    assert values["dicom-reader"]["image"]["repository"] == "dicom-reader"


def test_cs_then_ds_gives_back_values_yaml_byte_for_byte(project):
    before = (project / VALUES).read_bytes()
    tree_before = tree_digest(project)
    assert run_cli("create", "dicom-reader", cwd=project).returncode == 0
    result = run_cli("ds", "dicom-reader", "--force", cwd=project)
    assert result.returncode == 0, result.stderr
    assert (project / VALUES).read_bytes() == before
    assert tree_digest(project) == tree_before


def test_cs_keeps_comments_blank_lines_and_order_when_stages_is_not_last(project):
    values = project / VALUES
    text = values.read_text()
    head, stages = text.split("# Stage definitions\n")
    odd = head + "# Stage definitions\n" + stages + "\n\n# trailing comment about misc\nmisc:   {a: 1,  b: [x,  y]}  # keep me\n"
    values.write_text(odd)
    p = find_project(start=project)
    charts.create_stage(p, "recon")
    new = values.read_text()
    assert new.endswith("\n\n# trailing comment about misc\nmisc:   {a: 1,  b: [x,  y]}  # keep me\n")
    assert new.replace(new[new.index("  ##BEGIN_recon##"): new.index("##END_recon##\n") + len("##END_recon##\n")], "") == odd
    charts.delete_stage(p, "recon", force=True)  # the seed's ct and recon-only name it
    assert values.read_text() == odd


def test_cs_works_from_a_subfolder_and_with_chart_dir(project, tmp_path):
    deep = project / "test-data"
    assert run_cli("cs", "one", cwd=deep).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    chart = project / "charts" / "clara-workflow"
    assert run_cli("--chart-dir", str(chart), "cs", "two", cwd=elsewhere).returncode == 0
    assert run_cli("cs", "three", cwd=elsewhere, env={"CLARA_WF_CHART_DIR": str(chart)}).returncode == 0
    assert run_cli("ls", cwd=deep).stdout.split() == ["ai-vnet", "one", "three", "two"]


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("Dicom", "invalid stage name 'Dicom'"),
        ("-lead", "invalid stage name"),
        ("trail-", "invalid stage name"),
        ("under_score", "invalid stage name"),
        ("a" * 64, "at most 63"),
        ("template", "'template' is the folder new stages are copied from"),
        ("ai-vnet", "stage 'ai-vnet' already exists"),
    ],
)
def test_cs_refuses_bad_names_with_one_line_and_changes_nothing(project, name, fragment):
    before = tree_digest(project)
    result = run_cli("cs", "--", name, cwd=project)
    assert_one_line_error(result, 2, fragment)
    assert tree_digest(project) == before


@pytest.mark.parametrize(
    "breakage, fragment",
    [
        (lambda p: (p / VALUES).write_text("stages: [unclosed\n"), "is not valid YAML"),
        (lambda p: (p / VALUES).write_text("workflows: {}\n"), "no top-level 'stages:'"),
        (lambda p: (p / VALUES).write_text("stages: {}\n"), "flow style"),
        (lambda p: (p / VALUES).write_text("- a list\n"), "must be a YAML mapping"),
        (lambda p: (p / "charts/clara-workflow/_stage_values.yaml").unlink(), "_stage_values.yaml is missing"),
        (lambda p: __import__("shutil").rmtree(p / STAGES / "template"), "template is missing"),
        (lambda p: (p / VALUES).write_text("stages:\n  new-one:\n    image: {}\n"), "already has values"),
    ],
)
def test_cs_refuses_a_broken_chart_and_changes_nothing(project, breakage, fragment):
    breakage(project)
    before = tree_digest(project)
    result = run_cli("cs", "new-one", cwd=project)
    assert_one_line_error(result, 2, fragment)
    assert tree_digest(project) == before


def test_cs_on_an_empty_stages_key_indents_the_block(project):
    (project / VALUES).write_text("# my values\nstages:\n# end\n")
    assert run_cli("cs", "first", cwd=project).returncode == 0
    text = (project / VALUES).read_text()
    assert text.startswith("# my values\nstages:\n  ##BEGIN_first##\n  first:\n")
    assert text.endswith("  ##END_first##\n# end\n")


def test_a_failure_midway_leaves_neither_folder_nor_values(project, monkeypatch):
    p = find_project(start=project)
    before = tree_digest(project)

    real_write = fsio.atomic_write

    def disk_full(path, data, **kwargs):  # the journal is written, values.yaml is not
        if Path(path).name == "values.yaml":
            raise OSError(28, "No space left on device")
        return real_write(path, data, **kwargs)

    monkeypatch.setattr(fsio, "atomic_write", disk_full)
    with pytest.raises(OSError):
        charts.create_stage(p, "half")
    assert not (project / STAGES / "half").exists()
    assert tree_digest(project) == before


def test_two_cs_at_once_on_different_names_both_land(project):
    procs = [
        subprocess.Popen([sys.executable, "-m", "clara_wf", "cs", f"stage-{i}"], cwd=project,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    values = charts.stage_values(find_project(start=project))
    assert {f"stage-{i}" for i in range(4)} <= set(values)
    assert {f"stage-{i}" for i in range(4)} <= set(charts.list_stages(find_project(start=project)))


def test_ds_refuses_a_stage_a_workflow_uses_naming_the_workflows(project):
    assert run_cli("cs", "dicom-reader", cwd=project).returncode == 0
    before = tree_digest(project)
    result = run_cli("ds", "dicom-reader", cwd=project)
    assert_one_line_error(result, 2, "used by workflow(s) ", "ai, ct, dicom-reader-only", "--force")
    assert tree_digest(project) == before
    assert run_cli("delete", "dicom-reader", "--force", cwd=project).returncode == 0
    assert not (project / STAGES / "dicom-reader").exists()


def test_ds_of_an_unknown_stage_or_template_is_refused(project):
    before = tree_digest(project)
    assert_one_line_error(run_cli("ds", "ghost", cwd=project), 2, "no stage 'ghost' (stages: ai-vnet)")
    assert_one_line_error(run_cli("ds", "template", cwd=project), 2, "cannot be deleted")
    assert tree_digest(project) == before


def test_ds_removes_a_hand_written_stage_without_markers(project):
    values = project / VALUES
    values.write_text(values.read_text() + "  manual:\n    image:\n      repository: manual\n")
    (project / STAGES / "manual").mkdir()
    charts.delete_stage(find_project(start=project), "manual")
    assert "  manual:" not in values.read_text()
    assert not (project / STAGES / "manual").exists()


def test_check_stage_name_accepts_dns_labels():
    for good in ("a", "ai-vnet", "x1", "1x", "a" * 63):
        charts.check_stage_name(good)
    with pytest.raises(InputError):
        charts.check_stage_name("a.b")


@pytest.mark.parametrize("name", ["", ".", "..", "ai-vnet/", "../charts"])
def test_ds_refuses_names_that_are_not_stage_names(project, name):
    before = tree_digest(project)
    assert_one_line_error(run_cli("ds", "--", name, cwd=project), 2, "stage names are DNS-1123 labels")
    assert tree_digest(project) == before


@pytest.mark.parametrize("name", ["foo\n", "foo\r"])
def test_cs_refuses_a_name_with_a_trailing_line_break(project, name):
    before = tree_digest(project)
    assert_one_line_error(run_cli("cs", name, cwd=project), 2, "invalid stage name")
    assert tree_digest(project) == before


def test_cs_ds_round_trip_keeps_crlf_line_endings(project):
    values = project / VALUES
    crlf = values.read_bytes().replace(b"\n", b"\r\n")
    values.write_bytes(crlf)
    assert run_cli("cs", "zz", cwd=project).returncode == 0
    edited = values.read_bytes()
    assert edited.count(b"\n") == edited.count(b"\r\n")  # the new block uses the file's line ending
    assert run_cli("ds", "zz", cwd=project).returncode == 0
    assert values.read_bytes() == crlf


def test_cs_ds_round_trip_keeps_a_missing_final_newline(project):
    values = project / VALUES
    text = values.read_bytes().rstrip(b"\n")
    values.write_bytes(text)
    assert run_cli("cs", "zz", cwd=project).returncode == 0
    assert run_cli("ds", "zz", cwd=project).returncode == 0
    assert values.read_bytes() == text


def test_duplicate_keys_are_refused_before_any_edit(project):
    values = project / VALUES
    values.write_text(values.read_text() + 'runSimple: "TRUE"\n')
    before = tree_digest(project)
    assert_one_line_error(run_cli("cs", "zz", cwd=project), 2, "duplicate key 'runSimple'")
    assert tree_digest(project) == before


def test_unreadable_values_is_one_clear_line(project):
    values = project / VALUES
    values.unlink()
    values.mkdir()
    assert_one_line_error(run_cli("cs", "zz", cwd=project), 2, "is a folder, not a file")
