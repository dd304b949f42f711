"""The DICOM adapter in a cluster: each job is a clara-workflow release run by the Kubernetes engine.

As in tests/test_kube_engine.py, helm is a recording fake and the Kubernetes API is the
HTTP-level fake server, so the real kubernetes client watches the job. The adapter's
service runs a job from its store (no DICOM network here: that is test_dicom_adapter.py).
"""

from __future__ import annotations

import pytest
from adapter_helpers import adapter_project
from helpers.fake_helm import FakeHelm
from helpers.fake_kube_api import cs_running, cs_terminated, cs_waiting, script_job_run

from clara_wf.dicom import jobrun
from clara_wf.dicom import store as st
from clara_wf.dicom.config import from_flags
from clara_wf.dicom.service import Adapter
from clara_wf.engines.kubernetes import workflow_job_name
from clara_wf.project import find_project

pytestmark = pytest.mark.helm
IMAGE = "derive:latest"
HOST_PAYLOADS = "/clara-io/clara-core/payloads/dicom-adapter/payloads"


@pytest.fixture
def api(api):
    """The shared fake API (conftest), with the pull secret already there."""
    api.serve_secrets(initial={"nvcr.io": {"type": "kubernetes.io/dockerconfigjson", "metadata": {"name": "nvcr.io"}}})
    return api


def received_job(store: st.Store) -> str:
    """A study of two instances, received and handed to its job, as the SCP leaves it."""
    group = store.open_group(called_ae="CLARA", grouping="StudyInstanceUID", uid="1.2.3", calling_ae="CT01",
                             calling_host="10.0.0.21", workflows=["derive"], input_folder="dicom-server",
                             output_folder="output")
    for sop in ("1.2.3.4.1", "1.2.3.4.2"):
        store.store_instance(store.instance_path(group, "P1", "1.2.3", "1.2.3.4", sop), b"\0" * 128 + b"DICM")
    (job_id,) = store.close_group(group)
    return job_id


@pytest.fixture
def helm(monkeypatch):
    """The kubernetes engine makes its own Helm(): the recording fake stands in for it."""
    fake = FakeHelm()
    monkeypatch.setattr("clara_wf.helm.Helm", lambda *a, **k: fake)
    return fake


def test_fake_api_a_job_runs_as_a_release_with_the_adapter_folders_and_the_node_payload_path(api, helm, tmp_path):
    project = find_project(start=adapter_project(tmp_path / "project"))
    store = st.Store(tmp_path / "state")
    store.create()
    job_id = received_job(store)
    release = f"wf-{job_id}"
    script_job_run(api, workflow_job_name(release), {"derive": IMAGE}, [
        ([cs_waiting("derive", IMAGE)], "Pending"),
        ([cs_running("derive", IMAGE)], "Running"),
        ([cs_terminated("derive", IMAGE)], "Succeeded"),
    ], logs={"derive": ["derived 2 instances"]})
    config = from_flags(workflows=["derive"], engine="kubernetes", port=11112)
    logs = []
    adapter = Adapter(project, config, store, log=logs.append, payloads_host_path=HOST_PAYLOADS)
    adapter.engine = "kubernetes"
    adapter.process(job_id)

    record = store.read_job(job_id)
    assert record["state"] == "done", (record, logs)
    assert record["engine"] == "kubernetes"
    assert helm.ops() == [("install", release), ("uninstall", release)]
    values = helm.calls[0][4]
    assert values["job.id"] == job_id and values["workflow.id"] == "derive"
    assert values["dicomAdapter.input"] == "dicom-server" and values["dicomAdapter.output"] == "output"
    assert values["workflow.payloads.hostPath"] == HOST_PAYLOADS  # the node's view of store.payloads_dir
    assert values["job.name"].startswith("DICOM StudyInstanceUID 1.2.3")
    assert f"job {job_id}: stage derive done" in logs


def test_fake_api_a_failed_stage_fails_the_job_and_nothing_is_exported(api, helm, tmp_path):
    project = find_project(start=adapter_project(tmp_path / "project"))
    store = st.Store(tmp_path / "state")
    store.create()
    job_id = received_job(store)
    release = f"wf-{job_id}"
    script_job_run(api, workflow_job_name(release), {"derive": IMAGE}, [
        ([cs_running("derive", IMAGE)], "Running"),
        ([cs_terminated("derive", IMAGE, exit_code=3, reason="Error")], "Failed"),
    ], final="Failed", final_reason="BackoffLimitExceeded")
    config = from_flags(workflows=["derive"], engine="kubernetes", port=11112, destinations=["PACS@127.0.0.1:9"])
    adapter = Adapter(project, config, store, log=lambda m: None)
    adapter.engine = "kubernetes"
    adapter.process(job_id)
    record = store.read_job(job_id)
    assert record["state"] == "failed" and record["exports"] == {}
    assert record["message"]


def test_the_chart_folders_are_the_seeds_defaults(tmp_path):
    project = find_project(start=adapter_project(tmp_path / "project"))
    assert jobrun.adapter_folders(project) == ("dicom-server", "output")  # seed 003's values.yaml
    assert jobrun.release_name("11111111-1111-1111-1111-111111111111") == "wf-11111111-1111-1111-1111-111111111111"


def test_fake_api_a_job_interrupted_mid_run_is_run_again_after_its_release_is_removed(api, helm, tmp_path):
    project = find_project(start=adapter_project(tmp_path / "project"))
    store = st.Store(tmp_path / "state")
    store.create()
    job_id = received_job(store)
    release = f"wf-{job_id}"
    store.update_job(job_id, state="running", engine="kubernetes")  # the adapter died while it ran
    helm.installed.add(release)
    script_job_run(api, workflow_job_name(release), {"derive": IMAGE}, [
        ([cs_running("derive", IMAGE)], "Running"),
        ([cs_terminated("derive", IMAGE)], "Succeeded"),
    ])
    logs = []
    adapter = Adapter(project, from_flags(workflows=["derive"], engine="kubernetes", port=11112), store,
                      log=logs.append)
    adapter.engine = "kubernetes"
    adapter.process(job_id)
    assert store.read_job(job_id)["state"] == "done", logs
    assert helm.ops() == [("uninstall", release), ("install", release), ("uninstall", release)]
    assert any("left by the interrupted run" in line for line in logs)
