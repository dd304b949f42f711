"""The Kubernetes engine's run record: built from the Job's container statuses (fake API
server), the same shape as the local engine's, attempts included when the runner left its
record as the termination message."""

from __future__ import annotations

import json

import pytest
from helpers.fake_kube_api import FakeKubeAPI, cs_running, cs_terminated, script_job_run

from clara_wf import kube, run_record
from clara_wf.project import find_project
from clara_wf.workflow import plan_run

JOB = "test-wf-clara-workflow"
IMAGE = "ai-vnet:latest"


@pytest.fixture
def api(tmp_path, monkeypatch):
    with FakeKubeAPI() as server:
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield server


def _with_message(status: dict, message: str) -> dict:
    status["state"]["terminated"]["message"] = message
    return status


def test_record_from_container_statuses(api, project):
    runner = {"protocol": 1, "status": "succeeded", "waited_s": 0.25, "start_epoch": 1704067201.0,
              "end_epoch": 1704067202.0, "program_exit_code": 0, "message": "",
              "attempts": [{"attempt": 1, "status": "failed", "program_exit_code": 7, "run_s": 0.4},
                           {"attempt": 2, "status": "succeeded", "program_exit_code": 0, "run_s": 0.5}]}
    script_job_run(api, JOB, {"ai-vnet": IMAGE}, [
        ([cs_running("ai-vnet", IMAGE)], "Running"),
        ([_with_message(cs_terminated("ai-vnet", IMAGE), json.dumps(runner))], "Succeeded"),
    ])
    run = plan_run(find_project(start=project))
    recorder = run_record.RunRecorder(run, "kubernetes", run_id="r-kube")
    with kube.Kube("default") as k:
        outcome = k.watch_job(JOB, on_event=recorder, stages=["ai-vnet"], timeout=20)
    recorder.take(outcome)
    record = json.loads((run.job_dir / "run.json").read_text())
    assert record["run_id"] == "r-kube" and record["engine"] == "kubernetes" and record["status"] == "succeeded"
    (stage,) = record["stages"]
    assert stage["state"] == "done" and stage["status"] == "succeeded" and stage["exit_code"] == 0
    assert stage["start"].startswith("2024-01-01T00:00:01") and stage["end"].startswith("2024-01-01T00:00:02")
    assert [a["program_exit_code"] for a in stage["attempts"]] == [7, 0] and stage["run_s"] == 0.9
    assert stage["wait_s"] == 0.25


def test_record_of_a_failed_container_without_a_runner_record(api, project):
    script_job_run(api, JOB, {"ai-vnet": IMAGE}, [
        ([cs_terminated("ai-vnet", IMAGE, 117)], "Failed"),
    ], final="Failed", final_reason="BackoffLimitExceeded")
    run = plan_run(find_project(start=project))
    recorder = run_record.RunRecorder(run, "kubernetes")
    with kube.Kube("default") as k:
        outcome = k.watch_job(JOB, on_event=recorder, stages=["ai-vnet"], timeout=20)
    recorder.take(outcome)
    record = json.loads((run.job_dir / "run.json").read_text())
    assert record["status"] == "failed"
    (stage,) = record["stages"]
    assert stage["state"] == "failed" and stage["exit_code"] == 117 and stage["status"] == "run-timeout"
    assert stage["run_s"] == 1.0
