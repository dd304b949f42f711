"""The clara-workflow chart, rendered by real helm and checked on the parsed documents."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import REPO, HelmError, by_kind, env_of, helm_binary, job_containers, render_chart, run_values

from clara_wf import charts
from clara_wf.project import find_project

pytestmark = pytest.mark.helm

CHART = REPO / "charts" / "clara-workflow"
RUN_VALUES = run_values(job_id="11111111-2222-3333-4444-555555555555", host_path="/data/test-data",
                        job_name="Lung study", leave_out=("workflow.id",))
CLARA_VARIABLES = {
    "NVIDIA_CLARA_STAGENAME", "NVIDIA_CLARA_RUNSIMPLE", "NVIDIA_CLARA_TRTISURI", "NVIDIA_CLARA_APPDIR",
    "NVIDIA_CLARA_INPUTLOCK", "NVIDIA_CLARA_INPUTS", "NVIDIA_CLARA_JOBID", "NVIDIA_CLARA_JOBNAME",
    "NVIDIA_CLARA_LOGNAME", "NVIDIA_CLARA_LOCKDIR", "NVIDIA_CLARA_LOCKNAME", "NVIDIA_CLARA_OUTPUTS",
    "NVIDIA_CLARA_TIMEOUT", "NVIDIA_CLARA_WAITNAME",
}


@pytest.fixture
def ct_chart(project) -> Path:
    """The seed's `ct` workflow made renderable: its missing stages scaffolded with `cs`."""
    p = find_project(start=project)
    for name in ("dicom-reader", "recon", "dicom-writer"):
        if name not in charts.list_stages(p):
            charts.create_stage(p, name)
    return p.chart_dir


def test_default_workflow_renders_one_job_with_one_container_per_stage():
    docs = render_chart(set_string=RUN_VALUES)
    assert sorted(d["kind"] for d in docs) == ["Job", "PersistentVolume", "PersistentVolumeClaim", "Pod"]
    (job,) = by_kind(docs, "Job")
    assert job["metadata"]["name"] == "test-wf-clara-workflow"
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert [c["name"] for c in pod["containers"]] == ["ai-vnet"]
    assert pod["volumes"] == [{
        "name": "clara-payload-volume",
        "persistentVolumeClaim": {"claimName": "pv-clara-payload-volume-claim-11111111-2222-3333-4444-555555555555"},
    }]


def test_each_container_carries_the_fourteen_clara_variables_filled_from_values():
    (container,) = job_containers(render_chart(set_string=RUN_VALUES))
    env = env_of(container)
    assert CLARA_VARIABLES <= set(env)
    assert env["NVIDIA_CLARA_STAGENAME"] == "ai-vnet"
    assert env["NVIDIA_CLARA_RUNSIMPLE"] == "TRUE"
    assert env["NVIDIA_CLARA_TRTISURI"] == "trtis.default:8000"
    assert env["NVIDIA_CLARA_JOBID"] == "11111111-2222-3333-4444-555555555555"
    assert env["NVIDIA_CLARA_JOBNAME"] == "Lung study"
    assert env["NVIDIA_CLARA_APPDIR"] == "/app"
    assert env["NVIDIA_CLARA_LOCKDIR"] == "/app/locks"
    assert env["NVIDIA_CLARA_LOCKNAME"] == "ai-vnet.lock"
    assert env["NVIDIA_CLARA_LOGNAME"] == "/app/logs/ai-vnet.log"
    assert env["NVIDIA_CLARA_TIMEOUT"] == "300"
    assert env["NVIDIA_CLARA_WAITNAME"] == ""


def test_the_stage_program_runs_under_the_stage_runner():
    (container,) = job_containers(render_chart(set_string=RUN_VALUES))
    assert container["image"] == "ai-vnet:latest"
    assert container["command"] == ["python3", "-m", "clara_wf.runner", "--"]
    assert container["args"] == ["python3", "-u", "main.py"]


def test_without_a_runner_the_command_is_the_stage_program():
    values = {"stages": {"ai-vnet": {"runner": []}}, "workflows": {"ai-only": {"args": [["--fast"]]}}}
    (container,) = job_containers(render_chart(values=values, set_string=RUN_VALUES))
    assert container["command"] == ["python3", "-u", "main.py"]
    assert container["args"] == ["--fast"]


def test_mounts_are_absolute_and_map_the_payload_folders():
    (container,) = job_containers(render_chart(set_string=RUN_VALUES))
    mounts = {m["mountPath"]: m.get("subPath") for m in container["volumeMounts"]}
    assert mounts == {
        "/app/input": "ai-vnet/input",
        "/app/output": "ai-vnet/output",
        "/app/locks": "locks",
        "/app/logs": "logs",
        "/payloads": None,
    }
    assert all(path.startswith("/") for path in mounts)


def test_dicom_adapter_folders_feed_the_first_and_take_the_last_stage():
    docs = render_chart(set_string={**RUN_VALUES, "dicomAdapter.input": "dicom-server", "dicomAdapter.output": "output"})
    mounts = {m["mountPath"]: m.get("subPath") for m in job_containers(docs)[0]["volumeMounts"]}
    assert mounts["/app/input"] == "dicom-server"
    assert mounts["/app/output"] == "output"


def test_payload_volume_is_the_jobs_host_folder():
    docs = render_chart(set_string=RUN_VALUES)
    (pv,) = by_kind(docs, "PersistentVolume")
    (pvc,) = by_kind(docs, "PersistentVolumeClaim")
    assert pv["spec"]["hostPath"]["path"] == "/data/test-data/11111111-2222-3333-4444-555555555555"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pvc["spec"]["storageClassName"] == pv["spec"]["storageClassName"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"


def test_standard_labels_on_every_object():
    for doc in render_chart(set_string=RUN_VALUES):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "clara-workflow"
        assert labels["app.kubernetes.io/instance"] == "test-wf"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "clara-workflow-0.1.0"


def test_helm_test_hook_checks_every_stage_lock(ct_chart):
    docs = render_chart(ct_chart, set_string={**RUN_VALUES, "workflow.id": "ct"})
    (hook,) = by_kind(docs, "Pod")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = env_of(hook["spec"]["containers"][0])
    assert env["LOCKS"] == "dicom-reader.lock recon.lock ai-vnet.lock dicom-writer.lock"


def test_multi_stage_workflow_chains_locks_and_folders(ct_chart):
    containers = job_containers(render_chart(ct_chart, set_string={**RUN_VALUES, "workflow.id": "ct"}))
    assert [c["name"] for c in containers] == ["dicom-reader", "recon", "ai-vnet", "dicom-writer"]
    waits = [env_of(c)["NVIDIA_CLARA_WAITNAME"] for c in containers]
    assert waits == ["", "dicom-reader.lock", "recon.lock", "ai-vnet.lock"]
    folders = [
        ({m["mountPath"]: m.get("subPath") for m in c["volumeMounts"]}["/app/input"],
         {m["mountPath"]: m.get("subPath") for m in c["volumeMounts"]}["/app/output"])
        for c in containers
    ]
    assert folders == [
        ("dicom-reader/input", "dicom-reader/output"),
        ("dicom-reader/output", "recon/output"),
        ("recon/output", "ai-vnet/output"),
        ("ai-vnet/output", "dicom-writer/output"),
    ]


def test_explicit_io_folders_override_the_default_chain():
    values = {"workflows": {"ai-only": {"ioFolders": ["in", "out"]}}}
    (container,) = job_containers(render_chart(values=values, set_string=RUN_VALUES))
    mounts = {m["mountPath"]: m.get("subPath") for m in container["volumeMounts"]}
    assert (mounts["/app/input"], mounts["/app/output"]) == ("in", "out")


@pytest.mark.parametrize(
    "set_string, values, message",
    [
        ({"workflow.id": "ghost"}, {"workflows": {"ghost": {"stages": ["ghost-stage"]}}},
         'workflow "ghost" uses stage "ghost-stage", which has no values'),
        ({"workflow.id": "nope"}, None, 'workflow.id "nope" is not defined under workflows'),
        ({"job.id": "not-a-uuid"}, None, "not-a-uuid"),
        ({"workflow.payloads.hostPath": "relative/path"}, None, "relative/path"),
        ({}, {"workflows": {"ai-only": {"waitLocks": ["", "x.lock"]}}}, "waitLocks has 2 items but stages has 1"),
        ({}, {"workflows": {"twice": {"stages": ["ai-vnet", "ai-vnet"]}}, "workflow": {"id": "twice"}},
         'names stage "ai-vnet" twice'),
    ],
)
def test_bad_values_fail_with_a_message_naming_the_culprit(set_string, values, message):
    with pytest.raises(HelmError) as failure:
        render_chart(values=values, set_string={**RUN_VALUES, **set_string})
    assert message in str(failure.value)
    assert "nil pointer" not in str(failure.value)


def test_a_stage_with_values_but_no_templates_is_named_in_the_error(project):
    chart = project / "charts" / "clara-workflow"
    values = {"workflows": {"ghost-only": {"stages": ["ghost"]}}, "workflow": {"id": "ghost-only"},
              "stages": {"ghost": yaml.safe_load((chart / "values.yaml").read_text())["stages"]["ai-vnet"]}}
    with pytest.raises(HelmError) as failure:
        render_chart(chart, values=values, set_string=RUN_VALUES)
    assert "stages.ghost.container" in str(failure.value)
    assert "nil pointer" not in str(failure.value)


def test_schema_refuses_a_run_simple_that_is_not_true_or_false():
    with pytest.raises(HelmError) as failure:
        render_chart(set_string={**RUN_VALUES, "runSimple": "yes"})
    assert "runSimple" in str(failure.value)


def test_helm_lint_passes_strict():
    result = subprocess.run([helm_binary(), "lint", str(CHART), "--strict"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_run_timeout_and_retries_reach_the_runner_only_when_set():
    (plain,) = job_containers(render_chart(set_string=RUN_VALUES))
    assert not {"NVIDIA_CLARA_RUNTIMEOUT", "NVIDIA_CLARA_RETRIES", "NVIDIA_CLARA_RETRYBACKOFF"} & set(env_of(plain))
    values = {"stages": {"ai-vnet": {"runTimeout": 600, "retries": 2, "retryBackoff": "1.5"}}}
    (container,) = job_containers(render_chart(values=values, set_string=RUN_VALUES))
    env = env_of(container)
    assert (env["NVIDIA_CLARA_RUNTIMEOUT"], env["NVIDIA_CLARA_RETRIES"], env["NVIDIA_CLARA_RETRYBACKOFF"]) == ("600", "2", "1.5")


def test_the_job_pod_takes_placement_and_identity_from_values():
    """GPU nodes are usually tainted: the pod can be given tolerations, a node selector and more."""
    from kubernetes_validate import validate

    pod_values = {
        "podAnnotations": {"example.com/team": "radiology"},
        "serviceAccountName": "clara-runner",
        "podSecurityContext": {"runAsNonRoot": True, "fsGroup": 1000},
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
    }
    (job,) = by_kind(render_chart(values=pod_values, set_string={**RUN_VALUES, "workflow.id": "ai-only"}), "Job")
    template = job["spec"]["template"]
    assert template["metadata"]["annotations"] == pod_values["podAnnotations"]
    spec = template["spec"]
    assert spec["serviceAccountName"] == "clara-runner"
    assert spec["securityContext"] == pod_values["podSecurityContext"]
    for key in ("nodeSelector", "tolerations", "affinity"):
        assert spec[key] == pod_values[key]
    validate(job, "1.30.0", strict=True)


def test_by_default_the_job_pod_sets_no_placement():
    (job,) = by_kind(render_chart(set_string={**RUN_VALUES, "workflow.id": "ai-only"}), "Job")
    spec = job["spec"]["template"]["spec"]
    assert not {"serviceAccountName", "securityContext", "nodeSelector", "tolerations", "affinity"} & set(spec)
    assert "annotations" not in job["spec"]["template"]["metadata"]
