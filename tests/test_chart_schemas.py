"""Every object both charts render is valid for Kubernetes 1.30 to 1.35 (strict: no unknown field)."""

from __future__ import annotations

import pytest
import yaml
from helpers import REPO, render_chart, run_values
from kubernetes_validate import validate

from clara_wf import charts
from clara_wf.project import find_project

pytestmark = pytest.mark.helm

KUBERNETES_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0"]
RUN = run_values(leave_out=("workflow.id", "job.id"))


def renderable_workflows(chart_dir):
    """The workflows whose stages all exist (templates and values)."""
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    stages = set(charts.list_stages(find_project(chart_dir=chart_dir)))
    return [wf for wf, spec in values["workflows"].items() if set(spec["stages"]) <= stages & set(values["stages"])]


@pytest.fixture(scope="module")
def every_stage_project(tmp_path_factory):
    """The seed's values with every stage its workflows name scaffolded, so all of them render."""
    from helpers import copy_project

    root = copy_project(tmp_path_factory.mktemp("schemas"), reference_stages=True)  # the shipped stages
    project = find_project(start=root)
    for name in ("dicom-reader", "recon", "ai-livertumor", "dicom-writer"):
        if name not in charts.list_stages(project):  # the reference stages the project does not ship yet
            charts.create_stage(project, name)
    return project.chart_dir


def test_every_seed_workflow_is_renderable_once_its_stages_exist(every_stage_project):
    every = yaml.safe_load((every_stage_project / "values.yaml").read_text())["workflows"]
    assert sorted(renderable_workflows(every_stage_project)) == sorted(every)  # the guide's ids too
    assert {"ct", "ai", "dicom-reader-only", "ai-only", "recon-only", "dicom-writer-only"} <= set(every)
    shipped = set(charts.list_stages(find_project(chart_dir=REPO / "charts" / "clara-workflow")))
    seed = {"ct": ["dicom-reader", "recon", "ai-vnet", "dicom-writer"], "ai": ["dicom-reader", "ai-livertumor", "dicom-writer"],
            "dicom-reader-only": ["dicom-reader"], "ai-only": ["ai-vnet"], "recon-only": ["recon"],
            "dicom-writer-only": ["dicom-writer"]}
    assert {w for w, s in seed.items() if set(s) <= shipped} <= set(renderable_workflows(REPO / "charts" / "clara-workflow"))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_workflow_chart_objects_are_strictly_valid(every_stage_project, version):
    for workflow_id in renderable_workflows(every_stage_project):
        docs = render_chart(every_stage_project, set_string={**RUN, "workflow.id": workflow_id})
        assert docs
        for doc in docs:
            validate(doc, version, strict=True)  # raises ValidationError naming the field


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("gpus", ["0", "2"])
def test_trtis_chart_objects_are_strictly_valid(version, gpus):
    docs = render_chart(REPO / "charts" / "trtis", release="trtis", values={"gpus": int(gpus)})
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "Pod"}
    for doc in docs:
        validate(doc, version, strict=True)


def test_a_wrong_field_is_caught_by_strict_validation():
    """The validator is not a rubber stamp: an unknown field fails."""
    from kubernetes_validate import ValidationError

    (job,) = [d for d in render_chart(set_string={**RUN, "workflow.id": "ai-only"}) if d["kind"] == "Job"]
    job["spec"]["template"]["spec"]["containers"][0]["mountz"] = []
    with pytest.raises(ValidationError):
        validate(job, "1.35.0", strict=True)


def test_helm_lint_passes_for_every_renderable_workflow(every_stage_project):
    import subprocess

    from helpers import helm_binary

    for workflow_id in renderable_workflows(every_stage_project):
        argv = [helm_binary(), "lint", str(every_stage_project), "--strict"]
        for key, value in {**RUN, "workflow.id": workflow_id}.items():
            argv += ["--set-string", f"{key}={value}"]
        result = subprocess.run(argv, capture_output=True, text=True)
        assert result.returncode == 0, (workflow_id, result.stdout, result.stderr)
