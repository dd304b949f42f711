"""clara_wf.kube against an HTTP-level fake Kubernetes API server (tests/fake_kube_api.py).

The real ``kubernetes`` client runs in every test here; only the server is scripted.
These tests need no cluster: the fake listens on 127.0.0.1 and a kubeconfig written to
tmp_path points at it.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from helpers.fake_kube_api import (  # noqa: E402
    Delay,
    Json,
    Stream,
    cs_running,
    cs_terminated,
    cs_waiting,
    deployment,
    error,
    event,
    gone_event,
    job,
    listing,
    pod,
    script_job_run,
)

from clara_wf import kube  # noqa: E402
from clara_wf.errors import ClusterError  # noqa: E402
from clara_wf.events import Info, LogLine, StageUpdate  # noqa: E402

KEY = "nvapi-SECRET-KEY-5f3c9a1e77d0"
JOB = "test-wf-clara-workflow"
IMAGES = {"dicom-reader": "dicom-reader:latest", "ai-vnet": "ai-vnet:latest"}


@pytest.fixture
def k(api):
    with kube.Kube("default") as k:
        yield k


def _events(k, **kw):
    got = []
    outcome = k.watch_job(JOB, on_event=got.append, **kw)
    return outcome, got


def _secret_doc(body):
    return json.loads(base64.b64decode(body["data"][".dockerconfigjson"]))


def _assert_key_only_in_secret_bodies(api, *texts):
    encoded = kube.dockerconfigjson(KEY)
    for req in api.requests:
        assert KEY not in req.path and encoded not in req.path
        assert all(KEY not in v and encoded not in v for v in req.headers.values())
        if req.body and not (req.method in ("POST", "PUT") and "/secrets" in req.route_path):
            assert KEY.encode() not in req.body and encoded.encode() not in req.body
    for text in texts:
        assert KEY not in text and encoded not in text


# ------------------------------------------------------------------ probe


def test_fake_api_probe_answers_with_version(api):
    ok, reason = kube.probe()
    assert ok, reason
    assert "v1.30.0-fake" in reason and api.url in reason


def test_fake_api_probe_with_named_context(api, tmp_path):
    cfg = api.write_kubeconfig(tmp_path / "kc2", context="gpu-cluster")
    assert kube.probe("gpu-cluster", kubeconfig=str(cfg))[0]
    ok, reason = kube.probe("nope", kubeconfig=str(cfg))
    assert not ok and "nope" in reason


def test_fake_api_probe_server_error_is_false(api):
    api.route("GET", r"/version/?", error(500, "etcd is sad"))
    ok, reason = kube.probe()
    assert not ok and "500" in reason


# ------------------------------------------------------------------ secret


def test_fake_api_secret_created(api, k):
    api.serve_secrets()
    assert k.apply_pull_secret(KEY) == "created"
    posts = api.requests_to("POST", r"/api/v1/namespaces/default/secrets")
    assert len(posts) == 1
    body = posts[0].json()
    assert body["metadata"]["name"] == "nvcr.io"
    assert body["type"] == "kubernetes.io/dockerconfigjson"
    doc = _secret_doc(body)
    assert doc["auths"]["nvcr.io"]["username"] == "$oauthtoken"
    assert doc["auths"]["nvcr.io"]["password"] == KEY
    assert base64.b64decode(doc["auths"]["nvcr.io"]["auth"]).decode() == "$oauthtoken:" + KEY
    assert k.secret_exists()
    _assert_key_only_in_secret_bodies(api)


def test_fake_api_secret_replaced(api, k):
    api.serve_secrets()
    k.apply_pull_secret("nvapi-old-key")
    assert k.apply_pull_secret(KEY) == "replaced"
    puts = api.requests_to("PUT", r"/api/v1/namespaces/default/secrets/nvcr\.io")
    assert len(puts) == 1
    assert _secret_doc(api.secrets["nvcr.io"])["auths"]["nvcr.io"]["password"] == KEY
    _assert_key_only_in_secret_bodies(api)


def test_fake_api_secret_of_another_type_is_deleted_and_created(api, k):
    api.serve_secrets(initial={"nvcr.io": {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                           "metadata": {"name": "nvcr.io", "namespace": "default"}, "data": {}}})
    assert k.apply_pull_secret(KEY) == "replaced"
    assert [r.method for r in api.requests if "/secrets" in r.route_path] == ["GET", "DELETE", "POST"]
    assert api.secrets["nvcr.io"]["type"] == "kubernetes.io/dockerconfigjson"


def test_fake_api_secret_created_concurrently_is_replaced(api, k):
    api.serve_secrets()
    # GET says 404, but someone creates it before our POST: 409, then PUT
    api.route("GET", r"/api/v1/namespaces/default/secrets/nvcr\.io", error(404, 'secrets "nvcr.io" not found'))
    api.route("POST", r"/api/v1/namespaces/default/secrets", error(409, 'secrets "nvcr.io" already exists'))
    api.secrets["nvcr.io"] = {"type": "kubernetes.io/dockerconfigjson", "metadata": {"name": "nvcr.io"}}
    assert k.apply_pull_secret(KEY) == "replaced"


def test_fake_api_secret_refused_error_names_no_key(api, k):
    api.serve_secrets()
    # a server (or a webhook) that echoes the body back in its message must not leak the key
    echoed = f"admission webhook denied: data {kube.dockerconfigjson(KEY)} password {KEY}"
    api.route("POST", r"/api/v1/namespaces/default/secrets", error(403, echoed))
    with pytest.raises(ClusterError) as info:
        k.apply_pull_secret(KEY)
    text = str(info.value)
    assert "HTTP 403" in text and "nvcr.io" in text
    assert info.value.__cause__ is None and info.value.__suppress_context__
    _assert_key_only_in_secret_bodies(api, text, repr(info.value))


def test_fake_api_missing_namespace_says_how_to_create_it(api, k):
    api.route("GET", r"/api/v1/namespaces/default/secrets/nvcr\.io", error(404, 'secrets "nvcr.io" not found'))
    api.route("POST", r"/api/v1/namespaces/default/secrets", error(404, 'namespaces "default" not found'))
    with pytest.raises(ClusterError, match="kubectl create namespace default"):
        k.apply_pull_secret(KEY)


def test_fake_api_unreachable_after_config_is_a_cluster_error(api, k):
    api.stop()
    with pytest.raises(ClusterError, match="did not answer"):
        k.secret_exists()


# ------------------------------------------------------------------ deployment wait


def test_fake_api_deployment_wait_until_ready(api, k):
    api.route("GET", r"/apis/apps/v1/namespaces/default/deployments/trtis",
              Json(deployment("trtis", ready=0)), Json(deployment("trtis", ready=0)), Json(deployment("trtis", ready=1)))
    api.route("GET", r"/api/v1/namespaces/default/pods",
              Json(listing("PodList", [pod("trtis-abc", {"trtis": "tritonserver:24"},
                                           [cs_waiting("trtis", "tritonserver:24", "ContainerCreating")])])))
    got = []
    k.wait_deployment_ready("trtis", timeout=10, poll=0.05, on_event=got.append)
    assert len(api.requests_to("GET", r"/apis/apps/v1/namespaces/default/deployments/trtis")) == 3
    assert any(isinstance(e, Info) and "0/1 replicas ready" in e.text for e in got)
    sel = api.requests_to("GET", r"/api/v1/namespaces/default/pods")[0].param("labelSelector")
    assert sel == "app.kubernetes.io/instance=trtis,app.kubernetes.io/name=trtis"


def test_fake_api_deployment_image_pull_backoff_fails_fast_naming_image(api, k):
    api.route("GET", r"/apis/apps/v1/namespaces/default/deployments/trtis", Json(deployment("trtis", ready=0)))
    image = "nvcr.io/nvidia/tritonserver:24.01-py3"
    api.route("GET", r"/api/v1/namespaces/default/pods",
              Json(listing("PodList", [pod("trtis-abc", {"trtis": image},
                                           [cs_waiting("trtis", image, "ImagePullBackOff", "Back-off pulling image")])])))
    start = time.monotonic()
    with pytest.raises(ClusterError) as info:
        k.wait_deployment_ready("trtis", timeout=30, poll=0.05)
    assert time.monotonic() - start < 5
    assert image in str(info.value) and "ImagePullBackOff" in str(info.value)
    assert "clara-wf setkey" in str(info.value)


def test_fake_api_deployment_wait_times_out_with_state(api, k):
    api.route("GET", r"/apis/apps/v1/namespaces/default/deployments/trtis", Json(deployment("trtis", ready=0)))
    api.route("GET", r"/api/v1/namespaces/default/pods", Json(listing("PodList", [])))
    with pytest.raises(ClusterError, match=r"not ready after 0.3 s \(0/1 replicas ready\)"):
        k.wait_deployment_ready("trtis", timeout=0.3, poll=0.05)


# ------------------------------------------------------------------ job watch


def _success_frames():
    return [
        ([cs_waiting("dicom-reader", IMAGES["dicom-reader"]), cs_waiting("ai-vnet", IMAGES["ai-vnet"])], "Pending"),
        ([cs_running("dicom-reader", IMAGES["dicom-reader"]), cs_running("ai-vnet", IMAGES["ai-vnet"])], "Running"),
        ([cs_terminated("dicom-reader", IMAGES["dicom-reader"]), cs_running("ai-vnet", IMAGES["ai-vnet"])], "Running"),
        ([cs_terminated("dicom-reader", IMAGES["dicom-reader"]), cs_terminated("ai-vnet", IMAGES["ai-vnet"])], "Succeeded"),
    ]


def test_fake_api_job_watch_success_reports_stage_states_in_order(api, k):
    script_job_run(api, JOB, IMAGES, _success_frames(), logs={"dicom-reader": ["read 3 files"], "ai-vnet": ["ok"]})
    outcome, got = _events(k, stages=["dicom-reader", "ai-vnet"], timeout=20)
    assert outcome.succeeded, outcome.message
    assert outcome.failed_stage is None and not outcome.timed_out
    assert outcome.message == f"job {JOB} succeeded"
    assert {s: u.state for s, u in outcome.stages.items()} == {"dicom-reader": "done", "ai-vnet": "done"}
    assert outcome.stages["ai-vnet"].exit_code == 0
    states = [(e.stage, e.state) for e in got if isinstance(e, StageUpdate)]
    for stage in IMAGES:
        seq = [s for st, s in states if st == stage]
        assert seq[0] == "waiting" and seq[-1] == "done" and "running" in seq
        assert seq.index("running") < seq.index("done")
    # the pods were watched by the Job's label, the Job by its name
    watch = [r for r in api.requests_to("GET", r"/api/v1/namespaces/default/pods") if r.param("watch")]
    assert watch and watch[0].param("labelSelector") == f"job-name={JOB}"
    jobs = api.requests_to("GET", r"/apis/batch/v1/namespaces/default/jobs")
    assert jobs[0].param("fieldSelector") == f"metadata.name={JOB}"


def test_fake_api_logs_streamed_per_container(api, k):
    logs = {
        "dicom-reader": ["reading series 1.2.3", "wrote input.mhd", "ünïcode ok"],
        "ai-vnet": ["loading model", "inference 12 ms", "wrote output.mhd"],
    }
    pod_name = script_job_run(api, JOB, IMAGES, _success_frames(), logs=logs)
    outcome, got = _events(k, stages=list(IMAGES), timeout=20)
    assert outcome.succeeded
    lines = [e for e in got if isinstance(e, LogLine)]
    for stage, expected in logs.items():
        assert [e.text for e in lines if e.stage == stage] == expected
    # one follow request per container, each naming its container
    reqs = api.requests_to("GET", rf"/api/v1/namespaces/default/pods/{pod_name}/log")
    assert sorted(r.param("container") for r in reqs) == sorted(IMAGES)
    assert all(r.param("follow") == "true" for r in reqs)


def test_fake_api_log_of_a_container_not_started_yet_is_retried(api, k):
    pod_name = script_job_run(api, JOB, {"ai-vnet": IMAGES["ai-vnet"]}, [
        ([cs_running("ai-vnet", IMAGES["ai-vnet"])], "Running"),
        ([cs_terminated("ai-vnet", IMAGES["ai-vnet"])], "Succeeded"),
    ])
    api.route("GET", rf"/api/v1/namespaces/default/pods/{pod_name}/log",
              error(400, 'container "ai-vnet" in pod "x" is waiting to start: ContainerCreating'),
              Stream(["late line\n"], content_type="text/plain"))
    outcome, got = _events(k, stages=["ai-vnet"], timeout=20)
    assert outcome.succeeded
    assert [e.text for e in got if isinstance(e, LogLine)] == ["late line"]
    assert len(api.requests_to("GET", rf"/api/v1/namespaces/default/pods/{pod_name}/log")) == 2


def test_fake_api_partial_last_log_line_is_kept(api, k):
    pod_name = script_job_run(api, JOB, {"ai-vnet": IMAGES["ai-vnet"]}, [
        ([cs_running("ai-vnet", IMAGES["ai-vnet"])], "Running"),
        ([cs_terminated("ai-vnet", IMAGES["ai-vnet"])], "Succeeded"),
    ])
    api.route("GET", rf"/api/v1/namespaces/default/pods/{pod_name}/log",
              Stream(["first\r\nsec", Delay(0.05), "ond\nno newline at end"], content_type="text/plain"))
    outcome, got = _events(k, stages=["ai-vnet"], timeout=20)
    assert [e.text for e in got if isinstance(e, LogLine)] == ["first", "second", "no newline at end"]


def test_fake_api_image_pull_backoff_fails_fast_naming_image(api, k):
    image = "registry.example/ai-vnet:missing"
    script_job_run(api, JOB, {"ai-vnet": image}, [
        ([cs_waiting("ai-vnet", image, "ContainerCreating")], "Pending"),
        ([cs_waiting("ai-vnet", image, "ErrImagePull", "rpc error: not found")], "Pending"),
        ([cs_waiting("ai-vnet", image, "ImagePullBackOff", "Back-off pulling image")], "Pending"),
    ], final=None)
    start = time.monotonic()
    outcome, got = _events(k, stages=["ai-vnet"], timeout=60)
    assert time.monotonic() - start < 10  # not the 60 s timeout
    assert not outcome.succeeded and not outcome.timed_out
    assert outcome.failed_stage == "ai-vnet"
    assert image in outcome.message and "ErrImagePull" in outcome.message
    assert outcome.stages["ai-vnet"].state == "failed"
    assert image in outcome.stages["ai-vnet"].detail


@pytest.mark.parametrize("reason", ["CreateContainerConfigError", "InvalidImageName"])
def test_fake_api_other_fatal_waiting_reasons_fail_fast(api, k, reason):
    image = "ai-vnet:latest"
    script_job_run(api, JOB, {"ai-vnet": image}, [
        ([cs_waiting("ai-vnet", image, reason, 'secret "x" not found')], "Pending"),
    ], final=None)
    outcome, _ = _events(k, stages=["ai-vnet"], timeout=60)
    assert not outcome.succeeded and outcome.failed_stage == "ai-vnet"
    assert reason in outcome.message and image in outcome.message


def test_fake_api_failed_stage_fails_the_job_with_exit_code(api, k):
    script_job_run(api, JOB, IMAGES, [
        ([cs_running("dicom-reader", IMAGES["dicom-reader"]), cs_running("ai-vnet", IMAGES["ai-vnet"])], "Running"),
        ([cs_terminated("dicom-reader", IMAGES["dicom-reader"], 3), cs_running("ai-vnet", IMAGES["ai-vnet"])], "Running"),
        ([cs_terminated("dicom-reader", IMAGES["dicom-reader"], 3), cs_terminated("ai-vnet", IMAGES["ai-vnet"], 1)], "Failed"),
    ], final="Failed", final_reason="BackoffLimitExceeded", final_message="Job has reached the specified backoff limit",
        logs={"dicom-reader": ["Traceback: boom"]})
    outcome, got = _events(k, stages=list(IMAGES), timeout=20)
    assert not outcome.succeeded
    assert outcome.failed_stage == "dicom-reader"
    assert outcome.stages["dicom-reader"].exit_code == 3
    assert "BackoffLimitExceeded" in outcome.message and "dicom-reader" in outcome.message
    assert LogLine("dicom-reader", "Traceback: boom") in got


def test_fake_api_watch_restarts_after_410_gone(api, k):
    """An ERROR 410 event in the pod watch, then an HTTP 410 answer to the next watch: each time list again, go on."""
    c = {"ai-vnet": IMAGES["ai-vnet"]}
    p_pending = pod("p1", c, [cs_waiting("ai-vnet", IMAGES["ai-vnet"])], job=JOB, rv="10")
    p_running = pod("p1", c, [cs_running("ai-vnet", IMAGES["ai-vnet"])], phase="Running", job=JOB, rv="20")
    p_done = pod("p1", c, [cs_terminated("ai-vnet", IMAGES["ai-vnet"])], phase="Succeeded", job=JOB, rv="40")
    calls = {"list": 0}

    def pods(req):
        if req.param("watch") is None:
            calls["list"] += 1
            items = [p_pending] if calls["list"] == 1 else [p_running]
            return Json(listing("PodList", items, str(10 * calls["list"] + 5)))
        rv = req.param("resourceVersion")
        if rv == "15":  # first watch: the pod starts running, then the server says the rv expired
            return Stream([event("MODIFIED", p_running), Delay(0.05), gone_event()])
        if rv == "25":  # watch after the second list: expired already (HTTP 410 answer)
            return error(410, "too old resource version: 25 (35)", "Expired")
        if rv == "35":  # after the third list
            return Stream([Delay(0.05), event("MODIFIED", p_done)], hold=30)
        return Stream([], hold=30)

    api.route("GET", r"/api/v1/namespaces/default/pods", pods)
    api.route("GET", r"/api/v1/namespaces/default/pods/p1", Json(p_done))
    api.route("GET", r"/api/v1/namespaces/default/pods/p1/log", Stream(["hi\n"], content_type="text/plain"))
    api.route("GET", r"/apis/batch/v1/namespaces/default/jobs",
              lambda req: Json(listing("JobList", [job(JOB)], "50")) if req.param("watch") is None else
              (Stream([Delay(0.8), event("MODIFIED", job(JOB, condition="Complete", rv="51"))], hold=30)
               if req.param("resourceVersion") == "50" else Stream([], hold=30)))
    outcome, got = _events(k, stages=["ai-vnet"], timeout=20)
    assert outcome.succeeded, outcome.message
    assert outcome.stages["ai-vnet"].state == "done"
    pod_reqs = api.requests_to("GET", r"/api/v1/namespaces/default/pods")
    seq = [("watch@" + r.param("resourceVersion")) if r.param("watch") else "list" for r in pod_reqs]
    assert seq[:6] == ["list", "watch@15", "list", "watch@25", "list", "watch@35"]
    assert sum("410 Gone" in e.text for e in got if isinstance(e, Info)) == 2
    states = [e.state for e in got if isinstance(e, StageUpdate)]
    assert states == ["waiting", "waiting", "running", "done"]  # re-listing repeats no state
    assert [e.detail for e in got if isinstance(e, StageUpdate)][:2] == ["pod not created yet", "ContainerCreating"]


def test_fake_api_job_watch_times_out(api, k):
    script_job_run(api, JOB, {"ai-vnet": IMAGES["ai-vnet"]}, [
        ([cs_running("ai-vnet", IMAGES["ai-vnet"])], "Running"),
    ], final=None)
    start = time.monotonic()
    outcome, _ = _events(k, stages=["ai-vnet"], timeout=1.0)
    assert 0.9 < time.monotonic() - start < 6
    assert outcome.timed_out and not outcome.succeeded
    assert "did not finish within 1 s" in outcome.message and "ai-vnet" in outcome.message


def test_fake_api_pod_end_is_trusted_when_the_job_never_reports(api, k):
    script_job_run(api, JOB, {"ai-vnet": IMAGES["ai-vnet"]}, [
        ([cs_running("ai-vnet", IMAGES["ai-vnet"])], "Running"),
        ([cs_terminated("ai-vnet", IMAGES["ai-vnet"], 0)], "Succeeded"),
    ], final=None)
    outcome, _ = k.watch_job(JOB, stages=["ai-vnet"], timeout=20, job_condition_grace=0.3), None
    assert outcome.succeeded


def test_fake_api_unschedulable_pod_is_reported(api, k):
    cond = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
    c = {"ai-vnet": IMAGES["ai-vnet"]}
    api.route("GET", r"/api/v1/namespaces/default/pods",
              lambda req: Json(listing("PodList", [pod("p1", c, None, job=JOB, conditions=cond)], "5"))
              if req.param("watch") is None else Stream([], hold=30))
    api.route("GET", r"/apis/batch/v1/namespaces/default/jobs",
              lambda req: Json(listing("JobList", [job(JOB)], "6")) if req.param("watch") is None else Stream([], hold=30))
    outcome, got = _events(k, stages=["ai-vnet"], timeout=0.8)
    assert outcome.timed_out
    assert any(isinstance(e, Info) and "Insufficient nvidia.com/gpu" in e.text for e in got)
    assert "Unschedulable" in outcome.stages["ai-vnet"].detail


def test_fake_api_watch_forbidden_is_a_cluster_error(api, k):
    api.route("GET", r"/api/v1/namespaces/default/pods", error(403, 'pods is forbidden: User "x" cannot list'))
    api.route("GET", r"/apis/batch/v1/namespaces/default/jobs",
              lambda req: Json(listing("JobList", [job(JOB)], "6")) if req.param("watch") is None else Stream([], hold=30))
    with pytest.raises(ClusterError, match="forbidden"):
        k.watch_job(JOB, stages=["ai-vnet"], timeout=10)


def test_fake_api_on_event_is_called_from_the_calling_thread_only(api, k):
    import threading

    script_job_run(api, JOB, IMAGES, _success_frames(), logs={"dicom-reader": ["a"] * 20, "ai-vnet": ["b"] * 20})
    me = threading.get_ident()
    seen = set()
    outcome = k.watch_job(JOB, stages=list(IMAGES), timeout=20, on_event=lambda e: seen.add(threading.get_ident()))
    assert outcome.succeeded and seen == {me}


def test_fake_api_job_that_does_not_exist_fails_at_once(api, k):
    api.route("GET", r"/api/v1/namespaces/default/pods",
              lambda req: Json(listing("PodList", [], "5")) if req.param("watch") is None else Stream([], hold=30))
    api.route("GET", r"/apis/batch/v1/namespaces/default/jobs",
              lambda req: Json(listing("JobList", [], "6")) if req.param("watch") is None else Stream([], hold=30))
    start = time.monotonic()
    outcome, _ = _events(k, stages=["ai-vnet"], timeout=30)
    assert time.monotonic() - start < 5
    assert not outcome.succeeded and "does not exist" in outcome.message


def test_fake_api_job_deleted_while_running_fails(api, k):
    c = {"ai-vnet": IMAGES["ai-vnet"]}
    api.route("GET", r"/api/v1/namespaces/default/pods",
              lambda req: Json(listing("PodList", [pod("p1", c, [cs_running("ai-vnet", IMAGES["ai-vnet"])],
                                                       phase="Running", job=JOB)], "5"))
              if req.param("watch") is None else Stream([], hold=30))
    api.route("GET", r"/api/v1/namespaces/default/pods/p1/log", Stream([], content_type="text/plain"))
    api.route("GET", r"/apis/batch/v1/namespaces/default/jobs",
              lambda req: Json(listing("JobList", [job(JOB)], "6")) if req.param("watch") is None
              else Stream([Delay(0.2), event("DELETED", job(JOB, rv="7"))], hold=30))
    outcome, _ = _events(k, stages=["ai-vnet"], timeout=30)
    assert not outcome.succeeded and "deleted" in outcome.message


def test_fake_api_secret_key_never_logged_even_at_debug(api, k, caplog):
    import logging

    api.serve_secrets()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger().setLevel(logging.DEBUG)
        for name in ("urllib3", "client", "kubernetes"):
            logging.getLogger(name).setLevel(logging.DEBUG)
        assert k.apply_pull_secret(KEY) == "created"
        assert k.apply_pull_secret(KEY) == "replaced"
    encoded = kube.dockerconfigjson(KEY)
    for record in caplog.records:
        text = record.getMessage()
        assert KEY not in text and encoded not in text
