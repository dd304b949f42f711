"""The dicom-adapter chart: the adapter in the cluster, starting each job as a clara-workflow release."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from helpers import REPO, by_kind, helm_binary, render_chart
from kubernetes_validate import validate

pytestmark = pytest.mark.helm

CHART = REPO / "charts" / "dicom-adapter"
KUBERNETES_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0"]
DESTINATIONS = {"config": {"dicom": {
    "scp": {"reject-unknown-sources": True, "sources": [{"ae-title": "CT01", "host-ip": "10.0.0.21"}],
            "ae-titles": [{"ae-title": "LIVER", "workflows": ["ai"], "destinations": ["PACS"]}]},
    "scu": {"destinations": [{"name": "PACS", "ae-title": "PACS", "host-ip": "10.0.0.5", "port": 104}]}}}}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", [None, {"service": {"type": "NodePort", "nodePort": 30104}}, DESTINATIONS],
                         ids=["defaults", "nodeport", "configured"])
def test_every_object_is_strictly_valid(version, values):
    docs = render_chart(CHART, release="da", values=values)
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ConfigMap", "PersistentVolume", "PersistentVolumeClaim",
                                         "Service", "Deployment", "Role", "RoleBinding", "ClusterRole",
                                         "ClusterRoleBinding"}
    for doc in docs:
        validate(doc, version, strict=True)


def test_lint_strict_passes():
    result = subprocess.run([helm_binary(), "lint", str(CHART), "--strict"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_adapter_runs_jobs_with_the_kubernetes_engine_on_the_shared_payload_folder():
    docs = render_chart(CHART, release="da", namespace="clara")
    (dep,) = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[2:4] == ["dicom-adapter", "serve"]
    assert args[args.index("--engine") + 1] == "kubernetes"
    assert args[args.index("--namespace") + 1] == "clara"
    assert args[args.index("--payloads-host-path") + 1] == "/clara-io/clara-core/payloads/dicom-adapter/payloads"
    assert {"name": "payloads", "mountPath": "/payloads"} in container["volumeMounts"]
    assert args[args.index("--state-dir") + 1] == "/payloads/dicom-adapter"
    (pv,) = by_kind(docs, "PersistentVolume")
    assert pv["spec"]["hostPath"]["path"] == "/clara-io/clara-core/payloads"
    (claim,) = by_kind(docs, "PersistentVolumeClaim")
    assert claim["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pod["serviceAccountName"] == "da-dicom-adapter"
    assert dep["spec"]["strategy"] == {"type": "Recreate"}  # one adapter per state folder


def test_the_service_exposes_the_dicom_port():
    docs = render_chart(CHART, release="da")
    (service,) = by_kind(docs, "Service")
    (dep,) = by_kind(docs, "Deployment")
    assert service["spec"]["ports"] == [{"port": 104, "targetPort": "dicom", "protocol": "TCP", "name": "dicom"}]
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "dicom", "containerPort": 104, "protocol": "TCP"}]


def test_the_config_map_is_a_configuration_the_adapter_accepts(tmp_path):
    from clara_wf.dicom import config as cfg

    (cm,) = by_kind(render_chart(CHART, release="da", values=DESTINATIONS), "ConfigMap")
    path = tmp_path / "adapter.yaml"
    path.write_text(cm["data"]["adapter.yaml"])
    loaded = cfg.load(path)
    assert loaded.port == 104 and loaded.engine == "kubernetes"
    assert loaded.reject_unknown_sources and loaded.sources[0].ae_title == "CT01"
    assert loaded.called["LIVER"].destinations == ("PACS",)
    assert loaded.destinations["PACS"].describe() == "PACS@10.0.0.5:104"


def test_rbac_grants_only_what_running_a_workflow_release_needs():
    docs = render_chart(CHART, release="da")
    (role,) = by_kind(docs, "Role")
    rules = {(tuple(r["apiGroups"]), res): set(r["verbs"]) for r in role["rules"] for res in r["resources"]}
    assert set(rules) == {((("",)), "secrets"), (("",), "persistentvolumeclaims"), (("",), "services"),
                          (("",), "pods"), (("",), "pods/log"), (("batch",), "jobs"), (("apps",), "deployments")}
    assert rules[(("",), "pods")] == {"get", "list", "watch"}  # never creates or deletes pods itself
    assert rules[(("",), "pods/log")] == {"get"}
    assert all("*" not in verbs and "escalate" not in verbs and "bind" not in verbs for verbs in rules.values())
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert [r["resources"] for r in cluster_role["rules"]] == [["persistentvolumes"]]  # the workflow's payload volume
    (binding,) = by_kind(docs, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "da-dicom-adapter", "namespace": "default"}]


def test_a_config_change_restarts_the_pod():
    a = by_kind(render_chart(CHART, release="da"), "Deployment")[0]
    b = by_kind(render_chart(CHART, release="da", values=DESTINATIONS), "Deployment")[0]
    key = "checksum/config"
    assert a["spec"]["template"]["metadata"]["annotations"][key] != b["spec"]["template"]["metadata"]["annotations"][key]


def test_values_file_is_plain_yaml_with_the_documented_defaults():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["port"] == 104 and values["replicaCount"] == 1
    assert values["config"]["dicom"]["scp"]["ae-titles"][0]["ae-title"] == "CLARA"
