"""One place for a job's input, whatever the workflow's form: test-data/JOB/input/. The guide's
test-data/JOB/<first stage>/input/ keeps working (seed form), and works for DAG workflows too."""

from __future__ import annotations

import pytest
from helpers import assert_error_last_line, run_cli

from clara_wf.workflow import choose_input_folder

JOB = "33333333-3333-3333-3333-333333333333"
SEED = {"stages": ["reader", "seg"], "waitLocks": ["", "reader.lock"], "args": ["", ""]}
DAG = {"stages": ["reader", "seg"], "io": {
    "reader": {"inputs": [{"path": "/input"}], "outputs": [{"name": "out", "path": "/output"}]},
    "seg": {"inputs": [{"from": "reader", "path": "/input"}], "outputs": [{"name": "out", "path": "/output"}]}}}


@pytest.mark.parametrize("definition, folders, chosen", [
    (SEED, ["reader/input"], None),  # the guide's place: the chart reads it already
    (SEED, ["input"], "input"),  # the one documented place
    (SEED, ["reader/input", "input"], None),  # both: the form's own wins
    (SEED, [], None),
    ({**SEED, "ioFolders": ["raw", "a", "b"]}, ["input"], "input"),
    (DAG, ["input"], None),
    (DAG, ["reader/input"], "reader/input"),
    (DAG, [], None),
])
def test_the_folder_a_run_reads(tmp_path, definition, folders, chosen):
    for folder in folders:
        (tmp_path / folder).mkdir(parents=True)
    assert choose_input_folder(definition, definition["stages"], tmp_path) == chosen


@pytest.fixture
def my_op(project):
    assert run_cli("cs", "my-op", cwd=project).returncode == 0
    return project


def _put_input(project, folder: str) -> None:
    where = project / "test-data" / JOB / folder / "series"
    where.mkdir(parents=True)
    (where / "1.dcm").write_text("one")


@pytest.mark.helm
@pytest.mark.parametrize("folder", ["input", "my-op/input"])
def test_seed_form_reads_either_place(my_op, folder):
    _put_input(my_op, folder)
    result = run_cli("test", "--stage", "my-op", JOB, "--engine", "local", cwd=my_op)
    assert result.returncode == 0, result.stderr
    assert (my_op / "test-data" / JOB / "my-op/output/series/1.dcm").read_text() == "one"


@pytest.mark.helm
@pytest.mark.parametrize("folder", ["input", "my-op/input"])
def test_dag_form_reads_either_place(my_op, folder):
    values = my_op / "charts/clara-workflow/values.yaml"
    text = values.read_text().replace("workflows:\n", "workflows:\n  dag1:\n    stages: [\"my-op\"]\n    io:\n"
                                      "      my-op: {inputs: [{path: /input}], outputs: [{name: seg, path: /output}]}\n", 1)
    values.write_text(text)
    _put_input(my_op, folder)
    result = run_cli("test", "dag1", JOB, "--engine", "local", cwd=my_op)
    assert result.returncode == 0, result.stderr
    assert (my_op / "test-data" / JOB / "my-op/seg/series/1.dcm").read_text() == "one"


@pytest.mark.helm
def test_no_input_names_both_places(my_op):
    (my_op / "test-data" / JOB).mkdir(parents=True)
    job = my_op / "test-data" / JOB
    assert_error_last_line(run_cli("test", "--stage", "my-op", JOB, "--engine", "local", cwd=my_op), 2,
                          f"put the job's input in {job / 'input'}/ (or {job / 'my-op' / 'input'}/)")
