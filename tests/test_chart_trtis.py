"""The trtis chart: Triton Inference Server beside the workflow."""

from __future__ import annotations

import subprocess

import pytest
from helpers import REPO, by_kind, helm_binary, helm_major, render_chart

pytestmark = pytest.mark.helm

CHART = REPO / "charts" / "trtis"


def deployment(docs):
    (dep,) = by_kind(docs, "Deployment")
    return dep


def test_triton_runs_over_the_model_repository_from_the_host():
    dep = deployment(render_chart(CHART, release="trtis"))
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert container["command"] == ["tritonserver"]
    assert "--model-repository=/models" in container["args"]
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert models["hostPath"]["path"] == "/clara/common/models"
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
    assert pod["imagePullSecrets"] == [{"name": "nvcr.io"}]


def test_ports_and_health_probes():
    (container,) = deployment(render_chart(CHART, release="trtis"))["spec"]["template"]["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}


@pytest.mark.parametrize("gpus, expected", [(1, {"nvidia.com/gpu": 1}), (2, {"nvidia.com/gpu": 2}), (0, None)])
def test_gpu_count_comes_from_values_and_zero_means_cpu(gpus, expected):
    (container,) = deployment(render_chart(CHART, release="trtis", values={"gpus": gpus}))["spec"]["template"]["spec"]["containers"]
    assert container["resources"].get("limits") == expected


def test_cluster_ip_service_selects_the_deployment():
    docs = render_chart(CHART, release="trtis")
    (service,) = by_kind(docs, "Service")
    assert service["metadata"]["name"] == "trtis"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == deployment(docs)["spec"]["selector"]["matchLabels"]
    assert {p["port"] for p in service["spec"]["ports"]} == {8000, 8001, 8002}


def test_release_name_without_trtis_gets_the_chart_suffix():
    (service,) = by_kind(render_chart(CHART, release="inference"), "Service")
    assert service["metadata"]["name"] == "inference-trtis"


def test_helm_test_hook_asks_triton_if_it_is_ready():
    (pod,) = by_kind(render_chart(CHART, release="trtis"), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["containers"][0]["args"][-1] == "http://trtis:8000/v2/health/ready"


def test_schema_refuses_a_negative_gpu_count():
    result = subprocess.run([helm_binary(), "template", "trtis", str(CHART), "--set", "gpus=-1"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "gpus" in result.stderr


def test_lint_strict_passes():
    result = subprocess.run([helm_binary(), "lint", str(CHART), "--strict"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_notes_print_the_uri_to_pass_as_trtis_uri():
    if helm_major() < 4:
        pytest.skip("Helm 3 renders NOTES.txt only against a cluster (install --dry-run needs one)")
    result = subprocess.run(
        [helm_binary(), "install", "trtis", str(CHART), "--namespace", "clara", "--dry-run=client"],
        capture_output=True, text=True, env={"KUBECONFIG": "/nonexistent", "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "trtis.clara:8000" in notes
