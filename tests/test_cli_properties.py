"""Property-based tests (hypothesis) over the CLI's inputs: stage names, job and workflow ids,
mutated values.yaml files and pipeline documents. Whatever the input, clara-wf either does
the job (exit 0) or refuses it with one line on stderr and exit 2 — no traceback, no
"internal error" — and a refusal changes nothing on disk.

The CLI runs in this process (``clara_wf.cli.main``) so that a few hundred examples take
seconds; the chart is put back after each accepted edit.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path
from typing import Tuple

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the test extra (make setup)")
from helpers import REPO, copy_project, tree_digest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from clara_wf import cli  # noqa: E402

SETTINGS = settings(max_examples=100, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
VALUES = "charts/clara-workflow/values.yaml"
STAGES = "charts/clara-workflow/templates/stages"


class Chart:
    """A private project, run through the in-process CLI, put back as it was after each example."""

    def __init__(self, root: Path):
        self.root = root
        self.values = (root / VALUES).read_bytes()
        self.pristine = root.parent / "pristine-charts"
        shutil.copytree(root / "charts", self.pristine)
        self.digest = tree_digest(root)

    def run(self, *args: str) -> Tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(self.root)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    cli.main(list(args))
                    code = 0
                except SystemExit as exit_:
                    code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            os.chdir(cwd)
        return code, out.getvalue(), err.getvalue()

    def restore(self) -> None:
        shutil.rmtree(self.root / "charts")
        shutil.copytree(self.pristine, self.root / "charts")


def assert_clean(code: int, err: str, before: str, after: str) -> None:
    """Exit 0, or one line on stderr, exit 2, nothing changed."""
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 0:
        return
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("warning:", "note:"))]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("clara-wf: "), err
    assert before == after, "a refused command changed the chart"


@pytest.fixture(scope="module")
def chart(tmp_path_factory) -> Chart:
    root = copy_project(tmp_path_factory.mktemp("props") / "project")
    return Chart(root)


# Names: anything text can be, with the shapes that broke things weighted in.
names = st.one_of(
    st.text(max_size=70),
    st.from_regex(r"[a-z0-9][-a-z0-9]{0,70}", fullmatch=True),
    st.sampled_from(["yes", "no", "on", "off", "y", "n", "true", "null", "123", "0", "1e3", "0x1f", "template",
                     "-", "a-", ".hidden", "ai-vnet", "A", "a" * 64, "a b", "a/b", "..", "~", "ä"]),
)


@SETTINGS
@given(name=names)
def test_any_stage_name(chart, name):
    before = tree_digest(chart.root)
    code, _out, err = chart.run("cs", "--", name)
    assert_clean(code, err, before, tree_digest(chart.root))
    if code == 0:
        data = yaml.safe_load((chart.root / VALUES).read_text())  # YAML 1.1, as Helm reads it
        assert data["stages"][name]["lockName"] == f"{name}.lock"
        code, _out, err = chart.run("ds", "--", name)
        assert code == 0, err
    chart.restore()
    code, _out, err = chart.run("ds", "--", name)
    assert_clean(code, err, before, tree_digest(chart.root))
    chart.restore()


@SETTINGS
@given(workflow=st.one_of(st.text(max_size=40), st.sampled_from(["ai-only", "ct", "yes", "", "-x"])),
       job=st.one_of(st.text(max_size=40), st.sampled_from(["", "0" * 36, "00000000-0000-0000-0000-00000000000g"])))
def test_any_workflow_and_job_id(chart, workflow, job):
    before = tree_digest(chart.root)
    code, _out, err = chart.run("test", "--dry-run", "--", workflow, job)
    assert code != 0 or (workflow, job) == ("ai-only", "00000000-0000-0000-0000-000000000000")
    assert_clean(code, err, before, tree_digest(chart.root))


def _mutate(text: str, data) -> str:
    lines = text.splitlines(keepends=True)
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["drop", "dup", "swap", "insert", "cut", "indent", "marker"]))
        at = data.draw(st.integers(0, max(len(lines) - 1, 0)))
        if kind == "drop" and lines:
            del lines[at]
        elif kind == "dup" and lines:
            lines.insert(at, lines[at])
        elif kind == "swap" and len(lines) > 1:
            other = data.draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif kind == "insert":
            lines.insert(at, data.draw(st.text(max_size=30)) + "\n")
        elif kind == "cut":
            lines = lines[:at]
        elif kind == "indent" and lines:
            lines[at] = " " * data.draw(st.integers(0, 6)) + lines[at].lstrip()
        elif kind == "marker":
            name = data.draw(st.sampled_from(["ai-vnet", "newstage"]))
            lines.insert(at, f"  ##{data.draw(st.sampled_from(['BEGIN', 'END']))}_{name}##\n")
    return "".join(lines)


@SETTINGS
@given(data=st.data())
def test_any_values_yaml_mutation(chart, data):
    values = chart.root / VALUES
    mutated = _mutate(chart.values.decode(), data)
    values.write_text(mutated)
    command = data.draw(st.sampled_from([("cs", "newstage"), ("ds", "ai-vnet", "--force"), ("ls",),
                                         ("graph", "ai-only")]))
    before = tree_digest(chart.root)
    code, _out, err = chart.run(*command)
    assert_clean(code, err, before, tree_digest(chart.root))
    chart.restore()


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                  st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                           max_leaves=12)
field_names = st.sampled_from(["name", "container", "input", "output", "variables", "requests", "services",
                               "image", "tag", "command", "path", "from", "gpu", "memory"])


def _pipeline(data) -> str:
    """The linear example with fields replaced by arbitrary YAML, or the raw text cut/changed."""
    base = yaml.safe_load((REPO / "examples" / "pipelines" / "linear-ct.yaml").read_text())
    doc = data.draw(st.sampled_from(["fields", "text"]))
    if doc == "text":
        text = (REPO / "examples" / "pipelines" / "linear-ct.yaml").read_text()
        return _mutate(text, data)
    for _ in range(data.draw(st.integers(1, 3))):
        target = base
        ops = base.get("operators") if isinstance(base, dict) else None
        if isinstance(ops, list) and ops and data.draw(st.booleans()):
            target = ops[data.draw(st.integers(0, len(ops) - 1))]
        if isinstance(target, dict):
            target[data.draw(st.one_of(field_names, st.sampled_from(["operators", "api-version", "parameters"])))] = \
                data.draw(yaml_values)
    return yaml.safe_dump(base, allow_unicode=True)


@SETTINGS
@given(data=st.data())
def test_any_pipeline_document(chart, tmp_path_factory, data):
    path = chart.root.parent / "pipeline.yaml"
    path.write_text(_pipeline(data))
    before = tree_digest(chart.root)
    code, _out, err = chart.run("import", str(path), "--workflow-id", "prop")
    assert_clean(code, err, before, tree_digest(chart.root))
    chart.restore()

