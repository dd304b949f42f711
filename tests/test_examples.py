"""The two example pipelines (examples/pipelines): imported, rendered, strictly valid, and
the fan-out/fan-in one run end to end on the local engine."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from helpers import JOB, REPO, env_of, job_containers, render_chart, run_cli, run_values
from kubernetes_validate import validate

from clara_wf import pipeline as pipeline_import

pytestmark = pytest.mark.helm

EXAMPLES = REPO / "examples" / "pipelines"
CHART = "charts/clara-workflow"
RUN = run_values(leave_out=("workflow.id",))
HAVE_BWRAP = shutil.which("bwrap") is not None
SANDBOXES = ["none", pytest.param("bwrap", marks=pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap not installed"))]
SCAN = "10 45 50 70\n90 100 55 200\n"  # liver [40,60]: 3 voxels, spleen [61,80]: 1, kidney [81,120]: 2, background 2
REPORT = "kidney 2 0.250\nliver 3 0.375\nspleen 1 0.125\nbackground 2 0.250\n"


@pytest.fixture
def imported(project) -> Path:
    for name in ("linear-ct", "fanout-organs"):
        result = run_cli("import", str(EXAMPLES / f"{name}.yaml"), cwd=project)
        assert result.returncode == 0, result.stderr
    return project


@pytest.mark.parametrize("name", ["linear-ct", "fanout-organs"])
def test_examples_are_clean_clara_pipelines(name):
    warnings = []
    pipeline = pipeline_import.read_pipeline(EXAMPLES / f"{name}.yaml", warn=warnings.append)
    assert warnings == []
    assert pipeline.name == name
    if name == "fanout-organs":
        assert len(pipeline.operators) >= 5
        merger = next(op for op in pipeline.operators if op.name == "organ-merger")
        assert len(merger.upstream) == 3  # fan-in
        reader_readers = [op.name for op in pipeline.operators if "organ-reader" in op.upstream]
        assert len(reader_readers) >= 3  # fan-out


@pytest.mark.parametrize("version", ["1.30.0", "1.35.0"])
@pytest.mark.parametrize("workflow_id", ["linear-ct", "fanout-organs"])
def test_imported_examples_render_strictly_valid_objects(imported, workflow_id, version):
    docs = render_chart(imported / CHART, set_string={**RUN, "workflow.id": workflow_id})
    assert {d["kind"] for d in docs} >= {"Job", "PersistentVolume", "PersistentVolumeClaim"}
    for doc in docs:
        validate(doc, version, strict=True)
    stages = pipeline_import.read_pipeline(EXAMPLES / f"{workflow_id}.yaml").operators
    assert [c["name"] for c in job_containers(docs)] == [op.name for op in stages]


def test_imported_values_reach_the_containers(imported):
    containers = {c["name"]: c for c in job_containers(render_chart(imported / CHART, set_string={
        **RUN, "workflow.id": "linear-ct"}))}
    vnet = containers["vnet-ct"]
    assert vnet["image"] == "ai-vnet:latest"
    assert vnet["command"] == ["python3", "-m", "clara_wf.runner", "--"] and vnet["args"] == ["python3", "-u", "main.py"]
    assert env_of(vnet)["TRITON_MODEL_NAME"] == "segmentation_ct_v1"
    assert env_of(vnet)["NVIDIA_CLARA_TRTISURI"] == "trtis.default:8000"
    assert env_of(vnet)["NVIDIA_CLARA_WAITNAME"] == "dicom-reader.lock"
    assert vnet["resources"] == {"requests": {"cpu": "2", "memory": "8192Mi"}, "limits": {"nvidia.com/gpu": "1"}}


def test_fanout_containers_get_clara_input_and_output_paths(imported):
    """The chart's DAG support: named folders mounted at the pipeline's paths, seed 000's variables."""
    containers = {c["name"]: c for c in job_containers(render_chart(imported / CHART, set_string={
        **RUN, "workflow.id": "fanout-organs"}))}
    expected = {
        "organ-reader": ("payload:/input", "organ-reader/volume:/output"),
        "seg-liver": ("organ-reader/volume:/input", "seg-liver/mask:/output"),
        "organ-merger": ("seg-liver/mask:/input/liver;seg-spleen/mask:/input/spleen;seg-kidney/mask:/input/kidney",
                         "organ-merger/labels:/output"),
        "organ-report": ("organ-merger/labels:/input/labels;organ-reader/volume:/input/volume",
                         "organ-report/report:/output"),
    }
    for name, (inputs, outputs) in expected.items():
        env = env_of(containers[name])
        assert env["NVIDIA_CLARA_INPUTPATHS"] == inputs, name
        assert env["NVIDIA_CLARA_OUTPUTPATHS"] == outputs, name
    mounts = {m["mountPath"]: m.get("subPath") for m in containers["organ-merger"]["volumeMounts"]}
    assert mounts["/input/liver"] == "seg-liver/mask"
    assert mounts["/input/kidney"] == "seg-kidney/mask"
    assert mounts["/output"] == "organ-merger/labels"
    assert {m["mountPath"]: m.get("subPath") for m in containers["organ-reader"]["volumeMounts"]}["/input"] == "input"
    assert env_of(containers["organ-merger"])["NVIDIA_CLARA_WAITNAME"] == "seg-liver.lock,seg-spleen.lock,seg-kidney.lock"


def _payload(project: Path) -> Path:
    return project / "test-data" / JOB


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_fanout_example_runs_end_to_end_on_the_local_engine(imported, sandbox):
    (_payload(imported) / "input").mkdir(parents=True)
    (_payload(imported) / "input" / "scan.txt").write_text(SCAN)
    result = run_cli("test", "fanout-organs", "--engine", "local", "--sandbox", sandbox, cwd=imported)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (_payload(imported) / "organ-report" / "report" / "report.txt").read_text() == REPORT
    labels = json.loads((_payload(imported) / "organ-merger" / "labels" / "labels.json").read_text())
    assert labels == {"1": "liver", "2": "liver", "3": "spleen", "4": "kidney", "5": "kidney", "6": "liver"}
    for organ in ("liver", "spleen", "kidney"):
        mask = json.loads((_payload(imported) / f"seg-{organ}" / "mask" / "mask.json").read_text())
        assert mask["organ"] == organ
    record = {s["stage"]: s for s in json.loads((_payload(imported) / "run.json").read_text())["stages"]}
    assert all(s["state"] == "done" for s in record.values()), record
    # Order: the reader before every segmenter, every segmenter before the merger, the merger before the report.
    for seg in ("seg-liver", "seg-spleen", "seg-kidney"):
        assert record["organ-reader"]["end"] <= record[seg]["start"]
        assert record[seg]["end"] <= record["organ-merger"]["start"]
    assert record["organ-merger"]["end"] <= record["organ-report"]["start"]


PARALLEL = """\
api-version: 0.4.0
name: sleepy
operators:
  - name: start
    container: {image: python, command: ["python3", "-c", "print('go')"]}
    input: [{path: /input}]
    output: [{path: /output}]
%s
  - name: join
    container: {image: python, command: ["python3", "-c", "print('joined')"]}
    input: [%s]
    output: [{path: /output}]
"""


def test_independent_branches_run_in_parallel(project):
    branches = [f"b{i}" for i in range(3)]
    body = "\n".join(textwrap.dedent(f"""\
          - name: {b}
            container: {{image: python, command: ["python3", "-c", "import time; time.sleep(1.5)"]}}
            input: [{{from: start, path: /input}}]
            output: [{{path: /output}}]""") for b in branches)
    joins = ", ".join(f"{{from: {b}, path: /in/{b}}}" for b in branches)
    (project / "sleepy.yaml").write_text(PARALLEL % (textwrap.indent(body, "  "), joins))
    result = run_cli("import", "sleepy.yaml", cwd=project)
    assert result.returncode == 0, result.stderr
    (_payload(project) / "input").mkdir(parents=True)
    result = run_cli("test", "sleepy", "--engine", "local", "--sandbox", "none", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    record = {s["stage"]: s for s in json.loads((_payload(project) / "run.json").read_text())["stages"]}
    starts = [record[b]["start"] for b in branches]
    ends = [record[b]["end"] for b in branches]
    assert max(starts) < min(ends)  # all three were running at the same time
