"""DAG workflows in the chart: named inputs and outputs (workflows.<id>.io), derived waits, validation."""

from __future__ import annotations

import pytest
from helpers import HelmError, by_kind, env_of, job_containers, render_chart, run_values

from clara_wf import charts
from clara_wf.project import find_project

pytestmark = pytest.mark.helm

RUN = run_values(host_path="/srv/td", job_name="J", trtis_uri="t:8000", leave_out=("workflow.id", "job.id"))
FAN_IO = {
    "reader": {"inputs": [{"path": "/input"}], "outputs": [{"name": "volume", "path": "/output"}]},
    "seg-a": {"inputs": [{"from": "reader", "name": "volume", "path": "/input"}], "outputs": [{"name": "mask", "path": "/output"}]},
    "seg-b": {"inputs": [{"from": "reader", "path": "/input"}], "outputs": [{"name": "mask", "path": "/output"}]},
    "merger": {
        "inputs": [{"from": "seg-a", "name": "mask", "path": "/input1"}, {"from": "seg-b", "name": "mask", "path": "/input2"}],
        "outputs": [{"name": "merged", "path": "/output"}, {"name": "report", "path": "/report"}],
    },
}
FAN = {"stages": ["reader", "seg-a", "seg-b", "merger"], "io": FAN_IO}


@pytest.fixture(scope="module")
def chart(tmp_path_factory):
    from helpers import copy_project

    root = copy_project(tmp_path_factory.mktemp("dag"))
    project = find_project(start=root)
    for name in ("reader", "seg-a", "seg-b", "merger"):
        charts.create_stage(project, name)
    return project.chart_dir


def render(chart, workflow, **extra_values):
    values = {"workflows": {"fan": workflow}, "workflow": {"id": "fan"}, **extra_values}
    return render_chart(chart, values=values, set_string=RUN)


def mounts(container):
    return {m["mountPath"]: m.get("subPath") for m in container["volumeMounts"]}


def test_each_named_input_and_output_is_mounted_at_its_path(chart):
    containers = {c["name"]: c for c in job_containers(render(chart, FAN))}
    assert mounts(containers["reader"])["/input"] == "input"
    assert mounts(containers["reader"])["/output"] == "reader/volume"
    assert mounts(containers["seg-b"])["/input"] == "reader/volume"  # the upstream's only output
    merger = mounts(containers["merger"])
    assert (merger["/input1"], merger["/input2"]) == ("seg-a/mask", "seg-b/mask")
    assert (merger["/output"], merger["/report"]) == ("merger/merged", "merger/report")
    assert "/app/input" not in merger  # the seed's folder chain is replaced, locks and logs stay
    assert merger["/app/locks"] == "locks" and merger["/app/logs"] == "logs"


def test_clara_inputpaths_and_outputpaths_in_seed_000_form(chart):
    containers = {c["name"]: env_of(c) for c in job_containers(render(chart, FAN))}
    assert containers["reader"]["NVIDIA_CLARA_INPUTPATHS"] == "payload:/input"
    assert containers["reader"]["NVIDIA_CLARA_OUTPUTPATHS"] == "reader/volume:/output"
    assert containers["merger"]["NVIDIA_CLARA_INPUTPATHS"] == "seg-a/mask:/input1;seg-b/mask:/input2"
    assert containers["merger"]["NVIDIA_CLARA_OUTPUTPATHS"] == "merger/merged:/output;merger/report:/report"


def test_waits_are_derived_from_the_inputs(chart):
    waits = {c["name"]: env_of(c)["NVIDIA_CLARA_WAITNAME"] for c in job_containers(render(chart, FAN))}
    assert waits == {"reader": "", "seg-a": "reader.lock", "seg-b": "reader.lock", "merger": "seg-a.lock,seg-b.lock"}


def test_explicit_wait_locks_win(chart):
    workflow = {**FAN, "waitLocks": ["", "reader.lock", "seg-a.lock", "seg-a.lock,seg-b.lock"]}
    waits = [env_of(c)["NVIDIA_CLARA_WAITNAME"] for c in job_containers(render(chart, workflow))]
    assert waits == ["", "reader.lock", "seg-a.lock", "seg-a.lock,seg-b.lock"]


def test_stage_env_values_become_container_variables(chart):
    docs = render(chart, FAN, stages={"seg-a": {"env": {"MODEL": "liver_v1", "THRESHOLD": 0.5}}})
    env = env_of(next(c for c in job_containers(docs) if c["name"] == "seg-a"))
    assert env["MODEL"] == "liver_v1" and env["THRESHOLD"] == "0.5"


def test_the_helm_test_hook_and_pv_still_render(chart):
    docs = render(chart, FAN)
    assert len(by_kind(docs, "Pod")) == 1 and len(by_kind(docs, "PersistentVolume")) == 1


def _with(io_changes=None, **workflow_changes):
    io = {k: dict(v) for k, v in FAN_IO.items()}
    io.update(io_changes or {})
    return {**FAN, "io": io, **workflow_changes}


@pytest.mark.parametrize(
    "workflow, message",
    [
        (_with({"ghost": {"outputs": [{"name": "x", "path": "/o"}]}}), 'io names stage "ghost", which is not in its stages'),
        (_with({"seg-a": {"inputs": [{"from": "nowhere", "path": "/i"}]}}), 'reads from "nowhere", which is not a stage'),
        (_with({"merger": {"inputs": [{"from": "seg-a", "name": "masks", "path": "/i"}]}}),
         "reads seg-a/masks, an output that no stage writes"),
        (_with({"seg-a": {"inputs": [{"from": "merger", "path": "/i"}], "outputs": [{"name": "mask", "path": "/o"}]},
                "merger": {"inputs": [{"from": "seg-a", "name": "mask", "path": "/i1"}],
                           "outputs": [{"name": "merged", "path": "/o"}]}}),
         "has a cycle among stages seg-a, merger"),
        (_with({"seg-a": {"inputs": [], "outputs": [{"name": "m", "path": "/o"}, {"name": "m", "path": "/p"}]}}),
         'stage "seg-a" has two outputs named "m"'),
        (_with({"merger": {"inputs": [{"from": "seg-a", "path": "/i"}, {"from": "seg-b", "path": "/i"}]}}),
         'stage "merger" mounts two inputs at /i'),
        (_with({"merger": {"inputs": [{"from": "seg-a", "path": "relative"}]}}), "needs an absolute path"),
        (_with(waitLocks=["", "reader.lock", "reader.lock", "nobody.lock"]), "waits for nobody.lock, which no stage"),
        (_with(waitLocks=["merger.lock", "reader.lock", "reader.lock", "seg-a.lock"]),
         "has a cycle among stages reader, seg-a, seg-b, merger"),
    ],
)
def test_graph_mistakes_fail_naming_the_culprit(chart, workflow, message):
    with pytest.raises(HelmError) as failure:
        render(chart, workflow)
    assert message in str(failure.value)
    assert "nil pointer" not in str(failure.value)


@pytest.mark.parametrize(
    "workflow, message",
    [
        (_with({"ghost": {"outputs": [{"name": "x", "path": "/o"}]}}), "io names stage 'ghost', which is not in its stages"),
        (_with({"seg-a": {"inputs": [{"from": "nowhere", "path": "/i"}], "outputs": [{"name": "mask", "path": "/o"}]}}),
         "reads from 'nowhere', which is not a stage"),
        (_with({"merger": {"inputs": [{"from": "seg-a", "name": "masks", "path": "/i"}]}}),
         "reads seg-a/masks, an output that no stage writes"),
        (_with(waitLocks=["merger.lock", "reader.lock", "reader.lock", "seg-a.lock"]),
         "has a cycle among stages reader, seg-a, seg-b, merger"),
        ({**FAN, "stages": ["reader", "seg-a", "seg-a", "merger"]}, "names stage 'seg-a' twice"),
    ],
)
def test_clara_wf_refuses_the_same_mistakes_before_helm_runs(chart, workflow, message, tmp_path):
    """`clara-wf test` checks the graph itself: helm is never called (CLARA_WF_HELM points nowhere)."""
    import yaml
    from helpers import assert_one_line_error, run_cli

    values = chart / "values.yaml"
    original = values.read_text()
    data = yaml.safe_load(original)
    data["workflows"]["fan"] = workflow
    try:
        values.write_text(yaml.safe_dump(data))
        (chart.parent.parent / "test-data" / "00000000-0000-0000-0000-000000000000").mkdir(parents=True, exist_ok=True)
        result = run_cli("test", "fan", "--dry-run", cwd=chart, env={"CLARA_WF_HELM": "/nonexistent/helm"})
        assert_one_line_error(result, 2, message)
    finally:
        values.write_text(original)
