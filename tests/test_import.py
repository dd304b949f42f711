"""`clara-wf import`: Clara pipeline definitions become stages and a DAG workflow.

Everything runs the real command line on a private copy of the project; refusals must
leave the whole tree byte-identical.
"""

from __future__ import annotations

import difflib
import textwrap
from pathlib import Path

import pytest
import yaml
from helpers import REPO, assert_one_line_error, run_cli, tree_digest

from clara_wf import charts
from clara_wf import pipeline as pipeline_import
from clara_wf.errors import InputError
from clara_wf.project import find_project

EXAMPLES = REPO / "examples" / "pipelines"
VALUES = "charts/clara-workflow/values.yaml"
STAGES = "charts/clara-workflow/templates/stages"


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def values(project: Path) -> dict:
    return yaml.safe_load((project / VALUES).read_text())


def only_insertions(before: str, after: str) -> bool:
    """Every line of `before` is still there, in order and unchanged: the edit only added lines."""
    matcher = difflib.SequenceMatcher(a=before.splitlines(keepends=True), b=after.splitlines(keepends=True),
                                      autojunk=False)
    return all(tag in ("equal", "insert") for tag, *_ in matcher.get_opcodes())


SMALL = """\
api-version: 0.4.0
name: small
operators:
  - name: reader
    container: {image: reader, tag: "1.0", command: ["python3", "-c", "print(1)"]}
    input: [{path: /input}]
    output: [{name: volume, path: /output}]
  - name: seg
    container: {image: seg, command: ["python3", "-c", "print(2)"]}
    input: [{from: reader, name: volume, path: /input}]
    output: [{name: mask, path: /output}]
"""


# --- the examples -------------------------------------------------------------------------


def test_fanout_example_becomes_six_stages_and_a_dag_workflow(project):
    before = (project / VALUES).read_text()
    result = run_cli("import", str(EXAMPLES / "fanout-organs.yaml"), cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the example is clean: no warning
    names = ["organ-reader", "seg-liver", "seg-spleen", "seg-kidney", "organ-merger", "organ-report"]
    for name in names:
        assert f"Stage '{name}' is created at: {project / STAGES / name}" in result.stdout
        assert sorted(p.name for p in (project / STAGES / name).iterdir()) == ["container.yaml", "volume.yaml"]
    assert "Run it: clara-wf test fanout-organs" in result.stdout
    assert only_insertions(before, (project / VALUES).read_text())

    data = values(project)
    workflow = data["workflows"]["fanout-organs"]
    assert workflow["stages"] == names
    assert workflow["waitLocks"] == ["", "organ-reader.lock", "organ-reader.lock", "organ-reader.lock",
                                     "seg-liver.lock,seg-spleen.lock,seg-kidney.lock",
                                     "organ-reader.lock,organ-merger.lock"]
    assert workflow["args"] == [""] * 6
    assert workflow["io"]["organ-reader"] == {"inputs": [{"path": "/input"}],
                                              "outputs": [{"name": "volume", "path": "/output"}]}
    # An input without a name reads the upstream's only output.
    assert workflow["io"]["seg-spleen"]["inputs"] == [{"from": "organ-reader", "name": "volume", "path": "/input"}]
    assert workflow["io"]["organ-merger"]["inputs"] == [
        {"from": "seg-liver", "name": "mask", "path": "/input/liver"},
        {"from": "seg-spleen", "name": "mask", "path": "/input/spleen"},
        {"from": "seg-kidney", "name": "mask", "path": "/input/kidney"},
    ]
    seg = data["stages"]["seg-liver"]
    assert seg["image"] == {"repository": "python", "tag": "3.12-slim", "pullPolicy": "IfNotPresent"}
    assert seg["command"][:2] == ["python3", "-c"] and "NVIDIA_CLARA_INPUTPATHS" in seg["command"][2]
    assert seg["env"] == {"ORGAN": "liver", "LOW": "40", "HIGH": "60"}
    assert seg["resources"] == {"requests": {"memory": "1024Mi"}, "limits": {"nvidia.com/gpu": "1"}}
    assert seg["services"] == []
    # What `cs` scaffolds and the pipeline does not say stays as scaffolded.
    assert seg["runner"] == ["python3", "-m", "clara_wf.runner", "--"]
    assert seg["source"] == "apps/seg-liver" and seg["lockName"] == "seg-liver.lock"


def test_linear_example_maps_trtis_requests_and_template_parameters(project):
    result = run_cli("import", str(EXAMPLES / "linear-ct.yaml"), cwd=project)
    assert result.returncode == 0, result.stderr
    assert "Stage 'vnet-ct' uses Triton (trtis service): `clara-wf install_trtis` provides it" in result.stdout
    data = values(project)
    assert data["workflows"]["linear-ct"]["stages"] == ["dicom-reader", "vnet-ct", "dicom-writer"]
    assert data["workflows"]["linear-ct"]["waitLocks"] == ["", "dicom-reader.lock", "vnet-ct.lock"]
    vnet = data["stages"]["vnet-ct"]
    assert vnet["services"] == ["trtis"]
    assert vnet["image"]["repository"] == "ai-vnet" and vnet["image"]["tag"] == "latest"
    assert vnet["command"] == ["python3", "-u", "main.py"]
    assert vnet["env"] == {"TRITON_MODEL_NAME": "segmentation_ct_v1", "TRITON_MODEL_VERSION": "1"}
    assert vnet["resources"] == {"requests": {"cpu": "2", "memory": "8192Mi"}, "limits": {"nvidia.com/gpu": "1"}}
    assert data["stages"]["dicom-reader"]["image"]["tag"] == "0.1.0"  # ${{ examples-tag }} default


def test_reimport_changes_nothing(project):
    assert run_cli("import", str(EXAMPLES / "fanout-organs.yaml"), cwd=project).returncode == 0
    digest = tree_digest(project)
    again = run_cli("import", str(EXAMPLES / "fanout-organs.yaml"), cwd=project)
    assert again.returncode == 0, again.stderr
    assert "Nothing changed: the chart already holds this pipeline." in again.stdout
    assert "Stage 'seg-liver' is unchanged in" in again.stdout
    assert tree_digest(project) == digest


def test_dry_run_shows_the_plan_and_writes_nothing(project):
    digest = tree_digest(project)
    result = run_cli("import", str(EXAMPLES / "linear-ct.yaml"), "--dry-run", cwd=project)
    assert result.returncode == 0, result.stderr
    assert tree_digest(project) == digest
    out = result.stdout
    assert "create stage 'vnet-ct'" in out and "add workflow 'linear-ct' (3 stages)" in out
    assert "+  linear-ct:" in out and '+    services: ["trtis"]' in out  # the values.yaml diff
    assert out.rstrip().endswith("Nothing was written.")
    # After the import, a dry run of a changed parameter shows one stage to update.
    assert run_cli("import", str(EXAMPLES / "linear-ct.yaml"), cwd=project).returncode == 0
    digest = tree_digest(project)
    result = run_cli("import", str(EXAMPLES / "linear-ct.yaml"), "--set", "model-name=liver_v2", "--dry-run", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "update stage 'vnet-ct'" in result.stdout and "unchanged stage 'dicom-reader'" in result.stdout
    assert '+      TRITON_MODEL_NAME: "liver_v2"' in result.stdout
    assert tree_digest(project) == digest


def test_set_fills_a_parameter_and_reimport_updates_only_that_stage(project):
    assert run_cli("import", str(EXAMPLES / "linear-ct.yaml"), cwd=project).returncode == 0
    before = (project / VALUES).read_text()
    result = run_cli("import", str(EXAMPLES / "linear-ct.yaml"), "--set", "model-name=liver_v2", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "Stage 'vnet-ct' values are updated in" in result.stdout
    assert "Stage 'dicom-reader' is unchanged in" in result.stdout
    after = (project / VALUES).read_text()
    assert values(project)["stages"]["vnet-ct"]["env"]["TRITON_MODEL_NAME"] == "liver_v2"
    changed = [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line[:1] in "+-"]
    assert changed == ['-       TRITON_MODEL_NAME: "segmentation_ct_v1"', '+       TRITON_MODEL_NAME: "liver_v2"']


def test_a_hand_edit_outside_the_imported_keys_survives_a_reimport(project):
    assert run_cli("import", str(EXAMPLES / "linear-ct.yaml"), cwd=project).returncode == 0
    path = project / VALUES
    path.write_text(path.read_text().replace('lockName: "vnet-ct.lock"\n    timeout: "300"',
                                             'lockName: "vnet-ct.lock"\n    timeout: "900"'))
    result = run_cli("import", str(EXAMPLES / "linear-ct.yaml"), "--set", "model-name=x", cwd=project)
    assert result.returncode == 0, result.stderr
    assert values(project)["stages"]["vnet-ct"]["timeout"] == "900"


# --- parameters, warnings, notes ------------------------------------------------------------


def test_missing_parameters_are_listed_in_one_line_and_nothing_changes(project, tmp_path):
    pipeline = write(tmp_path, SMALL.replace('tag: "1.0"', 'tag: "${{ TAG }}"').replace(
        "image: seg,", "image: '${{REGISTRY}}/seg',"))
    digest = tree_digest(project)
    result = run_cli("import", str(pipeline), cwd=project)
    assert_one_line_error(result, 2, "needs template parameters REGISTRY, TAG", "--set REGISTRY=VALUE --set TAG=VALUE")
    assert tree_digest(project) == digest
    result = run_cli("import", str(pipeline), "--set", "TAG=2.0", "--set", "REGISTRY=nvcr.io/me", cwd=project)
    assert result.returncode == 0, result.stderr
    data = values(project)["stages"]
    assert data["reader"]["image"]["tag"] == "2.0" and data["seg"]["image"]["repository"] == "nvcr.io/me/seg"


def test_a_set_for_no_parameter_is_refused(project, tmp_path):
    digest = tree_digest(project)
    result = run_cli("import", str(write(tmp_path, SMALL)), "--set", "NOPE=1", cwd=project)
    assert_one_line_error(result, 2, "--set NOPE", "has no such template parameter")
    result = run_cli("import", str(write(tmp_path, SMALL)), "--set", "novalue", cwd=project)
    assert_one_line_error(result, 2, "--set 'novalue': expected NAME=value")
    assert tree_digest(project) == digest


def test_unknown_fields_are_warned_about_by_name(project, tmp_path):
    text = SMALL.replace("name: small\n", "name: small\nschedule: nightly\n").replace(
        "    input: [{from: reader", "    models: [{name: liver}]\n    input: [{from: reader")
    text = text.replace("command: [\"python3\", \"-c\", \"print(2)\"]}", "command: [\"python3\", \"-c\", \"print(2)\"], entrypoint: x}")
    result = run_cli("import", str(write(tmp_path, text)), cwd=project)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("the pipeline: unknown field 'schedule' ignored" in w for w in warnings), warnings
    assert any("operator 'seg': unknown field 'models' ignored" in w for w in warnings), warnings
    assert any("operator 'seg' container: unknown field 'entrypoint' ignored" in w for w in warnings), warnings
    assert len(warnings) == 3


def test_typed_fields_are_known_in_050_but_not_in_040(project, tmp_path):
    typed = SMALL.replace("output: [{name: volume, path: /output}]",
                          "output: [{name: volume, path: /output, type: stream, element-type: dicom}]")
    result = run_cli("import", str(write(tmp_path, typed)), "--dry-run", cwd=project)
    assert "unknown fields 'type', 'element-type' ignored" in result.stderr
    result = run_cli("import", str(write(tmp_path, typed.replace("0.4.0", "0.5.0"))), "--dry-run", cwd=project)
    assert result.returncode == 0 and "warning" not in result.stderr
    shared = typed.replace("0.4.0", "0.5.0").replace("type: stream, element-type: dicom",
                                                     "type: array, element-type: float32, shape: [3]")
    digest = tree_digest(project)
    assert_one_line_error(run_cli("import", str(write(tmp_path, shared)), cwd=project), 2,
                          "operator 'reader' output[0] has type 'array'", "through folders")
    assert tree_digest(project) == digest


def test_api_version_030_is_read_as_040_with_a_note(project, tmp_path):
    result = run_cli("import", str(write(tmp_path, SMALL.replace("0.4.0", "0.3.0"))), cwd=project)
    assert result.returncode == 0, result.stderr
    assert "note: api-version 0.3.0 is the Argo-era format: its fields are read as api-version 0.4.0's" in result.stderr


def test_other_services_are_warned_and_trtis_with_another_variable_too(project, tmp_path):
    text = SMALL + textwrap.indent(textwrap.dedent("""\
        services:
          - name: triton
            connections: {http: [{name: NVIDIA_TRITON_HTTPURI, port: 8000}]}
          - name: redis
    """), "    ")
    result = run_cli("import", str(write(tmp_path, text)), cwd=project)
    assert result.returncode == 0, result.stderr
    assert "expects Triton's address in NVIDIA_TRITON_HTTPURI" in result.stderr
    assert "service 'redis' is not one clara-wf provides" in result.stderr
    assert values(project)["stages"]["seg"]["services"] == ["trtis"]


def test_an_operator_with_no_upstream_and_no_readers_is_kept(project, tmp_path):
    text = SMALL + (
        "  - name: audit\n"
        "    container: {image: audit, command: [\"python3\", \"-c\", \"print(3)\"]}\n"
        "    output: [{path: /output}]\n"
    )
    result = run_cli("import", str(write(tmp_path, text)), cwd=project)
    assert result.returncode == 0, result.stderr
    workflow = values(project)["workflows"]["small"]
    assert workflow["stages"] == ["reader", "seg", "audit"]
    assert workflow["waitLocks"] == ["", "reader.lock", ""]
    assert workflow["io"]["audit"] == {"inputs": [], "outputs": [{"name": "output", "path": "/output"}]}


def test_operators_are_put_in_a_topological_order(project, tmp_path):
    text = (
        "api-version: 0.4.0\nname: backwards\noperators:\n"
        "  - name: last\n    container: {image: x, command: [a]}\n"
        "    input: [{from: first, path: /in}]\n    output: [{path: /out}]\n"
        "  - name: first\n    container: {image: x, command: [a]}\n"
        "    input: [{path: /in}]\n    output: [{path: /out}]\n"
    )
    assert run_cli("import", str(write(tmp_path, text)), cwd=project).returncode == 0
    assert values(project)["workflows"]["backwards"]["stages"] == ["first", "last"]


# --- refusals: one line, nothing changed ------------------------------------------------------

REFUSALS = {
    "duplicate operator": (SMALL.replace("name: seg\n", "name: reader\n"), "two operators are named 'reader'"),
    "unknown from": (SMALL.replace("from: reader", "from: ghost"),
                     "operator 'seg' input[0] reads from 'ghost', which is not an operator of the pipeline"),
    "missing output": (SMALL.replace("name: volume, path: /input", "name: labels, path: /input"),
                       "reads output 'labels' of 'reader', which 'reader' does not declare (reader's outputs: volume)"),
    "cycle": (SMALL.replace("input: [{path: /input}]", "input: [{from: seg, path: /input}]"),
              "the operators form a cycle: reader -> seg -> reader"),
    "self loop": (SMALL.replace("from: reader", "from: seg"), "reads from 'seg' itself"),
    "not a DNS label": (SMALL.replace("name: seg\n", "name: Seg_Model\n"), "operator name 'Seg_Model' is not usable"),
    "pipeline name": (SMALL.replace("name: small", "name: Small Pipeline"),
                      "pipeline name 'Small Pipeline' is not a DNS-1123 label, so it cannot be the workflow id"),
    "no api-version": (SMALL.replace("api-version: 0.4.0\n", ""), "has no api-version"),
    "no image": (SMALL.replace("image: seg, ", ""), "operator 'seg' has no container.image"),
    "relative path": (SMALL.replace("path: /output}]\n  - name: seg", "path: output}]\n  - name: seg"),
                      "operator 'reader' output[0]: path 'output' must be absolute"),
    "two payload inputs": (SMALL.replace("input: [{path: /input}]", "input: [{path: /a}, {path: /b}]"),
                           "operator 'reader' reads the job payload twice"),
    "unnamed outputs": (SMALL.replace("output: [{name: volume, path: /output}]", "output: [{path: /o1}, {path: /o2}]"),
                        "operator 'reader' output[0] has no name; with several outputs each one needs a name"),
    "not yaml": ("api-version: 0.4.0\noperators: [\n", "is not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_bad_pipelines_are_refused_in_one_line_and_change_nothing(project, tmp_path, case):
    text, fragment = REFUSALS[case]
    digest = tree_digest(project)
    result = run_cli("import", str(write(tmp_path, text)), cwd=project)
    assert_one_line_error(result, 2, fragment)
    assert tree_digest(project) == digest


def test_a_stage_not_created_by_this_import_is_refused_unless_force(project, tmp_path):
    text = SMALL.replace("name: seg\n", "name: ai-vnet\n")
    digest = tree_digest(project)
    result = run_cli("import", str(write(tmp_path, text)), cwd=project)
    assert_one_line_error(result, 2, "stage ai-vnet already exists and was not created by importing pipeline 'small'",
                          "--force")
    assert tree_digest(project) == digest
    result = run_cli("import", str(write(tmp_path, text)), "--force", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "Stage 'ai-vnet' values are updated in" in result.stdout
    stage = values(project)["stages"]["ai-vnet"]
    assert stage["image"]["repository"] == "seg" and stage["command"] == ["python3", "-c", "print(2)"]
    assert stage["source"] == "apps/ai-vnet"  # the rest of the hand-made stage is kept


def test_a_stage_of_another_pipeline_is_refused(project, tmp_path):
    assert run_cli("import", str(write(tmp_path, SMALL)), cwd=project).returncode == 0
    other = SMALL.replace("name: small", "name: other")
    digest = tree_digest(project)
    result = run_cli("import", str(write(tmp_path, other, "other.yaml")), cwd=project)
    assert_one_line_error(result, 2, "stages reader, seg already exist and were not created by importing pipeline 'other'")
    assert tree_digest(project) == digest


def test_an_existing_workflow_id_is_refused_unless_force(project, tmp_path):
    digest = tree_digest(project)
    result = run_cli("import", str(write(tmp_path, SMALL)), "--workflow-id", "ct", cwd=project)
    assert_one_line_error(result, 2, "workflow 'ct' already exists", "not created by importing pipeline 'small'")
    assert tree_digest(project) == digest
    result = run_cli("import", str(write(tmp_path, SMALL)), "--workflow-id", "ct", "--force", cwd=project)
    assert result.returncode == 0, result.stderr
    data = values(project)
    assert data["workflows"]["ct"]["stages"] == ["reader", "seg"]
    assert data["workflows"]["ai"]["stages"] == ["dicom-reader", "ai-livertumor", "dicom-writer"]  # neighbours kept


def test_workflow_id_option_and_bad_ids(project, tmp_path):
    result = run_cli("import", str(write(tmp_path, SMALL)), "--workflow-id", "my-flow", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "my-flow" in values(project)["workflows"]
    assert_one_line_error(run_cli("import", str(write(tmp_path, SMALL)), "--workflow-id", "My_Flow", cwd=project), 2,
                          "--workflow-id 'My_Flow' is not usable")


def test_a_missing_file_is_one_line(project, tmp_path):
    assert_one_line_error(run_cli("import", str(tmp_path / "nope.yaml"), cwd=project), 2, "no pipeline definition at")


def test_a_failure_while_applying_puts_everything_back(project, tmp_path, monkeypatch):
    """The third stage cannot be scaffolded: the two created before it and values.yaml are restored."""
    proj = find_project(start=project)
    digest = tree_digest(project)
    plan = pipeline_import.plan_import(proj, EXAMPLES / "fanout-organs.yaml")
    real = charts.stage_folder
    calls = []

    def flaky(tx, project_, name, files):
        calls.append(name)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(tx, project_, name, files)

    monkeypatch.setattr(charts, "stage_folder", flaky)
    with pytest.raises(OSError):
        pipeline_import.apply_import(plan)
    assert calls == ["organ-reader", "seg-liver", "seg-spleen"]
    assert tree_digest(project) == digest


def test_a_values_file_changed_after_planning_is_not_overwritten(project):
    proj = find_project(start=project)
    plan = pipeline_import.plan_import(proj, EXAMPLES / "linear-ct.yaml")
    (project / VALUES).write_text((project / VALUES).read_text() + "# someone else's edit\n")
    digest = tree_digest(project)
    with pytest.raises(InputError, match="changed while the import was being prepared"):
        pipeline_import.apply_import(plan)
    assert tree_digest(project) == digest


def test_the_core_reports_warnings_through_callbacks_only(tmp_path, capsys):
    seen = []
    text = SMALL.replace("name: small\n", "name: small\ncolour: red\n")
    pipeline = pipeline_import.read_pipeline(write(tmp_path, text), warn=seen.append)
    assert [op.name for op in pipeline.operators] == ["reader", "seg"]
    assert seen and "'colour'" in seen[0]
    assert capsys.readouterr() == ("", "")


def test_the_workflow_agrees_with_validate_dag(project):
    """clara-wf's own DAG check (the chart's rules) finds the same upstream stages as the waitLocks written."""
    from clara_wf.workflow import validate_dag

    assert run_cli("import", str(EXAMPLES / "fanout-organs.yaml"), cwd=project).returncode == 0
    data = values(project)
    definition = data["workflows"]["fanout-organs"]
    lock_names = {name: data["stages"][name]["lockName"] for name in definition["stages"]}
    upstream = validate_dag("fanout-organs", definition, lock_names)
    assert list(upstream) == definition["stages"]
    order = definition["stages"].index
    for stage, wait in zip(definition["stages"], definition["waitLocks"]):  # waits in stage order
        assert ",".join(lock_names[u] for u in sorted(upstream[stage], key=order)) == wait, stage
