"""Untrusted documents — pipeline definitions, values.yaml, the stage template — are read with
bounds: each bad one is one line on stderr, exit 2, nothing changed, whatever it tries."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from helpers import assert_one_line_error, run_cli, tree_digest

VALUES = "charts/clara-workflow/values.yaml"
CHART = "charts/clara-workflow"
TEMPLATE = "charts/clara-workflow/templates/stages/template"

LAUGHS = "\n".join(
    [f"l0: &l0 [{', '.join(['lol'] * 9)}]"]
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
)


def _pipeline(extra: str = "", operators: str = "operators:\n  - name: a\n    container: {image: i, command: [x]}\n"
              "    output: [{path: /o}]\n") -> str:
    return f"api-version: 0.4.0\nname: p\n{extra}\n{operators}"


# One document per class of bad pipeline: each was an "internal error", a hang or a crash.
BAD_PIPELINES = {
    "billion-laughs": (_pipeline(LAUGHS), "aliases expand"),
    "self-referencing alias": (_pipeline("loop: &x\n  again: *x\n"), "refers to a node that contains it"),
    "20000 [ deep": (_pipeline("deep: " + "[" * 20000 + "]" * 20000), "nests deeper"),
    "5000 {a: deep": (_pipeline("deep: " + "{a: " * 5000 + "1" + "}" * 5000), "nests deeper"),
    "operators: 5": (_pipeline(operators="operators: 5\n"), "operators must be a list"),
    "operators: a mapping": (_pipeline(operators="operators: {a: 1}\n"), "operators must be a list"),
    "placeholder expanded 20000 times": (
        _pipeline("parameters: {P: '" + "y" * 1000 + "'}",
                  "operators:\n  - name: a\n    container: {image: i, command: ["
                  + ",".join(['"${{P}}"'] * 20000) + "]}\n    output: [{path: /o}]\n"),
        "past 5 MB"),
}


@pytest.mark.parametrize("case", sorted(BAD_PIPELINES))
def test_a_hostile_pipeline_is_refused_in_one_line(project, tmp_path, case):
    text, message = BAD_PIPELINES[case]
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    before = tree_digest(project)
    assert_one_line_error(run_cli("import", str(path), cwd=project), 2, message)
    assert tree_digest(project) == before


def test_pipelines_that_are_not_text_or_too_big_are_refused(project, tmp_path):
    before = tree_digest(project)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"api-version: 0.4.0\nname: \xff\xfe\n")
    assert_one_line_error(run_cli("import", str(binary), cwd=project), 2, "is not UTF-8 text")
    huge = tmp_path / "huge.yaml"
    huge.write_text(_pipeline(operators="operators:\n  - name: a\n    container: {image: i, command: [\""
                              + "x" * (6 * 1024 * 1024) + "\"]}\n    output: [{path: /o}]\n"))
    assert_one_line_error(run_cli("import", str(huge), cwd=project), 2, "Helm limits to 5 MB")
    assert tree_digest(project) == before


def test_an_import_that_would_push_values_past_helms_limit_is_refused_before_writing(project, tmp_path):
    """Each pipeline is under the limit; the second one would take values.yaml over it."""
    command = "x" * (3 * 1024 * 1024)
    for name in ("first", "second"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"api-version: 0.4.0\nname: {name}\noperators:\n  - name: {name}-op\n"
                        f"    container: {{image: i, command: [\"{command}\"]}}\n    output: [{{path: /o}}]\n")
    assert run_cli("import", str(tmp_path / "first.yaml"), cwd=project).returncode == 0
    before = tree_digest(project)
    assert_one_line_error(run_cli("import", str(tmp_path / "second.yaml"), cwd=project), 2,
                          "past Helm's 5 MB limit", "nothing was written")
    assert tree_digest(project) == before


def test_a_long_operator_chain_imports_whole(project, tmp_path):
    """300 operators took 107 s (one scratch chart and one parse per stage); now one pass.
    (Timing is measured in bench/import_scale, not here.)"""
    ops = []
    for i in range(120):
        source = "{path: /input}" if i == 0 else f"{{from: op-{i - 1}, path: /input}}"
        ops.append(f"  - name: op-{i}\n    container: {{image: img, command: [run]}}\n"
                   f"    input: [{source}]\n    output: [{{path: /output}}]\n")
    path = tmp_path / "chain.yaml"
    path.write_text("api-version: 0.4.0\nname: chain\noperators:\n" + "".join(ops))
    result = run_cli("import", str(path), cwd=project)
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load((project / VALUES).read_text())
    assert data["workflows"]["chain"]["stages"] == [f"op-{i}" for i in range(120)]
    assert all(f"op-{i}" in data["stages"] for i in range(120))


# --- values.yaml and the stage template, as a project received from someone else -------------------


def _bomb_values(project: Path) -> None:
    (project / VALUES).write_text((project / VALUES).read_text() + LAUGHS + "\n")


BAD_CHARTS = {
    "values.yaml billion laughs": (_bomb_values, "aliases expand"),
    "values.yaml not UTF-8": (lambda p: (p / VALUES).write_bytes((p / VALUES).read_bytes() + b"# \xff\n"),
                              "not UTF-8 text"),
    "values.yaml self-reference": (lambda p: (p / VALUES).write_text((p / VALUES).read_text() + "x: &x [*x]\n"),
                                   "refers to a node that contains it"),
    "duplicate workflow key": (lambda p: (p / VALUES).write_text((p / VALUES).read_text().replace(
        "workflows:\n", "workflows:\n  ct:\n    stages: []\n", 1)), "duplicate key 'ct'"),
    "_stage_values.yaml not UTF-8": (lambda p: (p / CHART / "_stage_values.yaml").write_bytes(b"\xff\xfe"),
                                     "not UTF-8 text"),
    "template not UTF-8": (lambda p: (p / TEMPLATE / "_container.yaml").write_bytes(b"\x80abc"), "not UTF-8 text"),
    "template file is a symlink": (
        lambda p: ((p / TEMPLATE / "_container.yaml").unlink(),
                   (p / TEMPLATE / "_container.yaml").symlink_to("/etc/passwd")),
        "is a symlink"),
    "_stage_values.yaml is a symlink": (
        lambda p: ((p / CHART / "_stage_values.yaml").unlink(),
                   (p / CHART / "_stage_values.yaml").symlink_to("/etc/passwd")),
        "is a symlink"),
    "template code reaches for os": (
        lambda p: (p / CHART / "_stage_values.yaml").write_text(
            (p / CHART / "_stage_values.yaml").read_text().replace(
                "tag: latest", "tag: \"[[= cycler.__init__.__globals__.os.system('touch pwned') =]]\"")),
        "cannot fill in the stage name"),
    "template code mutates what it is given": (
        lambda p: (p / TEMPLATE / "_volume.yaml").write_text("[[= [].append(1) =]]"), "cannot fill in"),
    "template recurses": (
        lambda p: (p / TEMPLATE / "_volume.yaml").write_text("[[% macro m() %]][[= m() =]][[% endmacro %]][[= m() =]]"),
        "cannot fill in"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHARTS))
def test_cs_on_a_hostile_chart_is_one_line_and_runs_nothing(project, case):
    breakage, message = BAD_CHARTS[case]
    breakage(project)
    before = tree_digest(project)
    started = time.monotonic()
    assert_one_line_error(run_cli("cs", "newstage", cwd=project), 2, message)
    assert time.monotonic() - started < 60  # (no timing claim: a hang would show here)
    assert tree_digest(project) == before
    assert not (project / "pwned").exists() and not Path(os.getcwd(), "pwned").exists()


@pytest.mark.parametrize("name", ["yes", "no", "on", "off", "y", "n", "true", "null", "123", "0", "1e3", "0x1f"])
def test_names_yaml_reads_as_other_types_work(project, name):
    """`cs yes` made every workflow fail (Helm read stages.yes as stages.true); `cs 123` was refused
    with a wrong message. The name is quoted wherever the template wrote it bare."""
    result = run_cli("cs", name, cwd=project)
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load((project / VALUES).read_text())  # PyYAML reads YAML 1.1, as Helm does
    assert data["stages"][name]["image"]["repository"] == name
    assert data["stages"][name]["lockName"] == f"{name}.lock"
    assert run_cli("ds", name, cwd=project).returncode == 0
    assert name not in yaml.safe_load((project / VALUES).read_text())["stages"]


def test_a_name_yaml_reads_as_a_boolean_renders_in_helm(project):
    from helpers import render_chart

    for name in ("yes", "123"):
        assert run_cli("cs", name, cwd=project).returncode == 0
    values = project / VALUES
    data = yaml.safe_load(values.read_text())
    data["workflows"]["odd"] = {"stages": ["yes", "123"], "waitLocks": ["", "yes.lock"], "args": ["", ""]}
    values.write_text(values.read_text().replace("workflows:\n", 'workflows:\n  odd:\n    stages: ["yes", "123"]\n'
                                                 '    waitLocks: ["", "yes.lock"]\n    args: ["", ""]\n', 1))
    docs = render_chart(project / CHART, set_string={"workflow.id": "odd", "job.id": "00000000-0000-0000-0000-000000000000"})
    (job,) = [d for d in docs if d["kind"] == "Job"]
    images = [c["image"] for c in job["spec"]["template"]["spec"]["containers"]]
    assert images == ["yes:latest", "123:latest"]


def test_a_duplicate_workflow_key_is_refused_alike_by_cs_ds_and_test(project):
    """cs accepted a values.yaml with a repeated workflow key that ds and test refused."""
    values = project / VALUES
    values.write_text(values.read_text().replace("workflows:\n", "workflows:\n  ct:\n    stages: []\n", 1))
    before = tree_digest(project)
    for args in (["cs", "newstage"], ["ds", "ai-vnet", "--force"], ["test", "ct", "--dry-run"], ["graph", "ct"]):
        assert_one_line_error(run_cli(*args, cwd=project), 2, "duplicate key 'ct'")
    assert tree_digest(project) == before
