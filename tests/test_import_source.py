"""`import --source OPERATOR=DIR`: where each imported stage's code lives (default apps/OPERATOR);
a missing code folder is named at `test`, with the command that scaffolds one."""

from __future__ import annotations

import pytest
from helpers import REPO, assert_error_last_line, assert_one_line_error, run_cli, tree_digest

from clara_wf import charts
from clara_wf.project import find_project

PIPELINE = str(REPO / "examples" / "pipelines" / "linear-ct.yaml")
JOB = "44444444-4444-4444-4444-444444444444"


def _source(project, stage):
    return charts.stage_values(find_project(start=project))[stage]["source"]


def test_default_source_is_apps_operator_and_import_says_the_code_is_missing(project):
    result = run_cli("import", PIPELINE, cwd=project)
    assert result.returncode == 0, result.stderr
    assert _source(project, "vnet-ct") == "apps/vnet-ct"
    assert ("Stage 'vnet-ct' has no code yet: put it in apps/vnet-ct/ "
            "(or generate a pass-through operator there: clara-wf cs vnet-ct --app-only)") in result.stdout


def test_source_sets_the_folder_relative_to_the_project(project):
    (project / "src" / "reader").mkdir(parents=True)
    result = run_cli("import", PIPELINE, "--source", "dicom-reader=src/reader",
                     "--source", f"vnet-ct={project / 'elsewhere'}", cwd=project)
    assert result.returncode == 0, result.stderr
    assert _source(project, "dicom-reader") == "src/reader"
    assert _source(project, "vnet-ct") == "elsewhere"
    assert "Stage 'dicom-reader' has no code yet" not in result.stdout
    again = run_cli("import", PIPELINE, "--source", "dicom-reader=src/other", cwd=project)  # a re-import updates it
    assert again.returncode == 0, again.stderr
    assert _source(project, "dicom-reader") == "src/other"


@pytest.mark.parametrize("item, fragment", [
    ("nope=apps/x", "--source names 'nope', which the pipeline has no operator of"),
    ("vnet-ct", "expected OPERATOR=DIR"),
    ("=apps/x", "expected OPERATOR=DIR"),
])
def test_bad_source_is_one_line_and_changes_nothing(project, item, fragment):
    before = tree_digest(project)
    assert_one_line_error(run_cli("import", PIPELINE, "--source", item, cwd=project), 2, fragment)
    assert tree_digest(project) == before


@pytest.mark.helm
def test_test_names_the_missing_code_folder_then_app_only_scaffolds_it(project):
    assert run_cli("import", PIPELINE, cwd=project).returncode == 0
    (project / "test-data" / JOB / "input").mkdir(parents=True)
    result = run_cli("test", "linear-ct", JOB, "--engine", "local", "--trtis-uri", "127.0.0.1:9", cwd=project)
    assert_error_last_line(result, 2, f"stage 'dicom-reader': its code folder {project / 'apps' / 'dicom-reader'} "
                                      "(stages.dicom-reader.source) is missing", "reader.py",
                           "`clara-wf cs dicom-reader --app-only`")
    made = run_cli("cs", "dicom-reader", "--app-only", cwd=project)
    assert made.returncode == 0, made.stderr
    assert (project / "apps" / "dicom-reader" / "main.py").is_file()
    assert_one_line_error(run_cli("cs", "dicom-reader", "--app-only", cwd=project), 2, "already exists")
    assert_one_line_error(run_cli("cs", "nope", "--app-only", cwd=project), 2, "no stage 'nope' in the chart")
