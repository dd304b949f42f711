"""clara_wf.kube_engine: setkey, install/uninstall_trtis and run_workflow.

Helm is replaced by a small recording fake (FakeHelm below); the Kubernetes API is the
HTTP-level fake server (tests/fake_kube_api.py), so the real kubernetes client runs.
One test builds a real helm command line (skipped when helm is not installed) and one
end-to-end test needs a real cluster (marker ``cluster``; skipped unless KUBECONFIG
points at a cluster that answers).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from helpers.fake_helm import FakeHelm
from helpers.fake_kube_api import (  # noqa: E402
    FakeKubeAPI,
    Json,
    cs_running,
    cs_terminated,
    cs_waiting,
    deployment,
    script_job_run,
)

from clara_wf import kube  # noqa: E402
from clara_wf.engines import kubernetes as kube_engine  # noqa: E402
from clara_wf.errors import ClusterError, ExternalToolError, InputError  # noqa: E402
from clara_wf.events import Info, LogLine, StageUpdate  # noqa: E402
from clara_wf.triton import cluster as triton  # noqa: E402
from clara_wf.workflow import workflow_set_string  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEY = "nvapi-ENGINE-KEY-9d8c7b6a5f4e"
RELEASE = "test-wf"
JOB = "test-wf-clara-workflow"
IMAGE = "ai-vnet:latest"


@pytest.fixture
def charts(tmp_path):
    for name in ("clara-workflow", "trtis"):
        d = tmp_path / "proj" / "charts" / name
        d.mkdir(parents=True)
        (d / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: 0.1.0\n")
    return tmp_path / "proj" / "charts"


def _values(tmp_path):
    return workflow_set_string(workflow_id="ai-only", job_id="00000000-0000-0000-0000-000000000000",
                                           payloads_host_path=tmp_path / "test-data", trtis_uri="")


def _trtis_ready(api):
    api.route("GET", r"/apis/apps/v1/namespaces/default/deployments/trtis", Json(deployment("trtis", ready=1)))


def _good_run(api):
    script_job_run(api, JOB, {"ai-vnet": IMAGE}, [
        ([cs_waiting("ai-vnet", IMAGE)], "Pending"),
        ([cs_running("ai-vnet", IMAGE)], "Running"),
        ([cs_terminated("ai-vnet", IMAGE)], "Succeeded"),
    ], logs={"ai-vnet": ["segmenting", "done"]})


def _run(helm, charts, tmp_path, **kw):
    events = kw.pop("events", [])
    args = dict(helm=helm, chart_dir=charts / "clara-workflow", release=RELEASE, namespace="default",
                kube_context=None, set_string=_values(tmp_path), timeout=20, keep=False,
                on_event=events.append, ngc_key=None, stages=["ai-vnet"])
    args.update(kw)
    return kube_engine.run_workflow(**args), events


# ------------------------------------------------------------------ setkey


def test_fake_api_setkey_created_then_replaced(api):
    api.serve_secrets()
    assert kube.set_ngc_api_key("default", KEY, None) == "created"
    assert kube.set_ngc_api_key("default", KEY + "\n", None) == "replaced"  # a pasted newline is stripped
    assert kube.dockerconfigjson(KEY) == api.secrets["nvcr.io"]["data"][".dockerconfigjson"]


def test_fake_api_setkey_in_another_namespace_and_context(api, tmp_path):
    cfg = api.write_kubeconfig(tmp_path / "kc-gpu", context="gpu")
    api.serve_secrets(namespace="clara")
    assert kube.set_ngc_api_key("clara", KEY, "gpu", kubeconfig=str(cfg)) == "created"
    assert api.requests_to("POST", r"/api/v1/namespaces/clara/secrets")


# ------------------------------------------------------------------ trtis


def test_fake_api_install_trtis_installs_and_waits(api, charts):
    _trtis_ready(api)
    helm = FakeHelm()
    events = []
    uri, already = triton.install_trtis(helm, charts / "trtis", "trtis", "default", None, 30, events.append)
    assert (uri, already) == ("trtis.default:8000", False)
    (op, release, chart, ns, values, wait, timeout, ctx), = helm.calls
    assert (op, release, chart, ns, values, wait) == ("install", "trtis", charts / "trtis", "default", {}, False)
    assert timeout == "30s"
    assert api.requests_to("GET", r"/apis/apps/v1/namespaces/default/deployments/trtis")
    assert any("ready at trtis.default:8000" in e.text for e in events)


def test_fake_api_install_trtis_already_installed_says_so(api, charts):
    _trtis_ready(api)
    helm = FakeHelm(installed=["trtis"])
    events = []
    uri, already = triton.install_trtis(helm, charts.parent, on_event=events.append)  # project root accepted
    assert already and uri == "trtis.default:8000"
    assert helm.ops() == []
    assert "already installed" in events[0].text


def test_fake_api_install_trtis_other_release_name_uses_fullname(api, charts):
    api.route("GET", r"/apis/apps/v1/namespaces/clara/deployments/triton-trtis", Json(deployment("triton-trtis", ready=1)))
    uri, _ = triton.install_trtis(FakeHelm(), charts / "trtis", "triton", "clara")
    assert uri == "triton-trtis.clara:8000"


def test_install_trtis_without_chart_is_an_input_error(tmp_path, api):
    with pytest.raises(InputError, match="not the trtis Helm chart"):
        triton.install_trtis(FakeHelm(), tmp_path / "nowhere")


def test_uninstall_trtis_idempotent():
    helm = FakeHelm(installed=["trtis"])
    events = []
    assert triton.uninstall_trtis(helm, on_event=events.append) is True
    assert triton.uninstall_trtis(helm, on_event=events.append) is False
    assert helm.ops() == [("uninstall", "trtis")]
    assert "not installed" in events[-1].text


# ------------------------------------------------------------------ run_workflow


def test_fake_api_run_workflow_success_installs_then_uninstalls_what_it_installed(api, charts, tmp_path):
    api.serve_secrets(initial={"nvcr.io": {"type": "kubernetes.io/dockerconfigjson", "metadata": {"name": "nvcr.io"}}})
    _trtis_ready(api)
    _good_run(api)
    helm = FakeHelm()
    outcome, events = _run(helm, charts, tmp_path)
    assert outcome.succeeded, outcome.message
    assert helm.ops() == [("install", "trtis"), ("install", RELEASE), ("uninstall", RELEASE), ("uninstall", "trtis")]
    wf = helm.calls[1]
    assert wf[2] == charts / "clara-workflow"
    assert wf[4]["trtisUri"] == "trtis.default:8000"
    assert wf[4]["workflow.payloads.hostPath"] == str(tmp_path / "test-data")
    assert wf[5] is True and wf[6] == "20s"  # helm --wait, bounded by the run's timeout
    assert [e.text for e in events if isinstance(e, LogLine)] == ["segmenting", "done"]
    done = outcome.stages["ai-vnet"]
    assert (done.stage, done.state, done.detail, done.exit_code, done.status) == ("ai-vnet", "done", "Completed", 0, "succeeded")
    assert done.started is not None and done.ended is not None and done.ended >= done.started  # from the container status


def test_fake_api_run_workflow_keep_keeps_releases(api, charts, tmp_path):
    api.serve_secrets(initial={"nvcr.io": {"type": "kubernetes.io/dockerconfigjson", "metadata": {"name": "nvcr.io"}}})
    _trtis_ready(api)
    _good_run(api)
    helm = FakeHelm()
    outcome, events = _run(helm, charts, tmp_path, keep=True)
    assert outcome.succeeded
    assert helm.ops() == [("install", "trtis"), ("install", RELEASE)]
    assert any("--keep" in e.text for e in events if isinstance(e, Info))


def test_fake_api_run_workflow_leaves_a_trtis_it_did_not_install(api, charts, tmp_path):
    api.serve_secrets(initial={"nvcr.io": {"type": "kubernetes.io/dockerconfigjson", "metadata": {"name": "nvcr.io"}}})
    _trtis_ready(api)
    _good_run(api)
    helm = FakeHelm(installed=["trtis"])
    outcome, _ = _run(helm, charts, tmp_path)
    assert outcome.succeeded
    assert helm.ops() == [("install", RELEASE), ("uninstall", RELEASE)]
    assert helm.installed == {"trtis"}


def test_fake_api_run_workflow_without_secret_or_key_stops_before_helm(api, charts, tmp_path):
    api.serve_secrets()
    helm = FakeHelm()
    with pytest.raises(ClusterError, match=r"no pull secret nvcr.io in namespace default; run `clara-wf setkey`"):
        _run(helm, charts, tmp_path)
    assert helm.calls == []


def test_fake_api_run_workflow_creates_secret_from_key_and_never_shows_it(api, charts, tmp_path):
    api.serve_secrets()
    _trtis_ready(api)
    _good_run(api)
    helm = FakeHelm()
    outcome, events = _run(helm, charts, tmp_path, ngc_key=KEY)
    assert outcome.succeeded
    assert "nvcr.io" in api.secrets
    assert any("secret nvcr.io created" in e.text for e in events if isinstance(e, Info))
    encoded = kube.dockerconfigjson(KEY)
    everything = repr(events) + repr(outcome) + repr(helm.calls)
    assert KEY not in everything and encoded not in everything
    for req in api.requests:
        assert KEY not in req.path and all(KEY not in v for v in req.headers.values())
        if not (req.method == "POST" and req.route_path.endswith("/secrets")):
            assert encoded.encode() not in req.body


def test_fake_api_run_workflow_image_pull_failure_still_uninstalls(api, charts, tmp_path):
    api.serve_secrets(initial={"nvcr.io": {"type": "kubernetes.io/dockerconfigjson", "metadata": {"name": "nvcr.io"}}})
    _trtis_ready(api)
    script_job_run(api, JOB, {"ai-vnet": IMAGE}, [
        ([cs_waiting("ai-vnet", IMAGE, "ErrImagePull", "pull access denied")], "Pending"),
    ], final=None)
    helm = FakeHelm(installed=["trtis"])
    outcome, _ = _run(helm, charts, tmp_path)
    assert not outcome.succeeded and outcome.failed_stage == "ai-vnet"
    assert IMAGE in outcome.message
    assert helm.ops() == [("install", RELEASE), ("uninstall", RELEASE)]


def test_fake_api_run_workflow_ctrl_c_uninstalls(api, charts, tmp_path):
    api.serve_secrets(initial={"nvcr.io": {"type": "kubernetes.io/dockerconfigjson", "metadata": {"name": "nvcr.io"}}})
    _trtis_ready(api)
    _good_run(api)
    helm = FakeHelm()
    events: list = []

    def on_event(e):
        events.append(e)
        if isinstance(e, StageUpdate) and e.state == "running":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(helm, charts, tmp_path, on_event=on_event)
    assert helm.ops() == [("install", "trtis"), ("install", RELEASE), ("uninstall", RELEASE), ("uninstall", "trtis")]


def test_fake_api_run_workflow_failed_helm_install_cleans_up(api, charts, tmp_path):
    api.serve_secrets(initial={"nvcr.io": {"type": "kubernetes.io/dockerconfigjson", "metadata": {"name": "nvcr.io"}}})
    _trtis_ready(api)
    helm = FakeHelm(fail_install=RELEASE)
    with pytest.raises(ExternalToolError, match="boom"):
        _run(helm, charts, tmp_path)
    assert helm.ops() == [("install", "trtis"), ("install", RELEASE), ("uninstall", RELEASE), ("uninstall", "trtis")]


def test_fake_api_run_workflow_existing_release_is_refused(api, charts, tmp_path):
    api.serve_secrets(initial={"nvcr.io": {"type": "kubernetes.io/dockerconfigjson", "metadata": {"name": "nvcr.io"}}})
    helm = FakeHelm(installed=[RELEASE])
    with pytest.raises(InputError, match=f"release {RELEASE} already exists"):
        _run(helm, charts, tmp_path)
    assert helm.calls == [] and helm.installed == {RELEASE}


def test_fake_api_run_workflow_uninstall_failure_is_reported_not_raised(api, charts, tmp_path):
    api.serve_secrets(initial={"nvcr.io": {"type": "kubernetes.io/dockerconfigjson", "metadata": {"name": "nvcr.io"}}})
    _trtis_ready(api)
    _good_run(api)

    class StuckHelm(FakeHelm):
        def uninstall(self, release, *, namespace, kube_context=None):
            raise ExternalToolError("helm uninstall timed out")

    helm = StuckHelm(installed=["trtis"])
    outcome, events = _run(helm, charts, tmp_path)
    assert outcome.succeeded
    assert any(f"helm uninstall {RELEASE} -n default" in e.text for e in events if isinstance(e, Info))


def test_fake_api_run_workflow_unmanaged_trtis_keeps_given_uri(api, charts, tmp_path):
    api.serve_secrets(initial={"nvcr.io": {"type": "kubernetes.io/dockerconfigjson", "metadata": {"name": "nvcr.io"}}})
    _good_run(api)
    helm = FakeHelm()
    values = dict(_values(tmp_path), trtisUri="triton.example:8000")
    outcome, _ = _run(helm, charts, tmp_path, set_string=values, trtis_release=None)
    assert outcome.succeeded
    assert helm.calls[0][4]["trtisUri"] == "triton.example:8000"


def test_run_workflow_unreachable_cluster_is_a_cluster_error(tmp_path, charts, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = FakeKubeAPI()  # not started: only used to write a kubeconfig shape
    cfg = tmp_path / "kc"
    cfg.write_text(
        '{"apiVersion": "v1", "kind": "Config", "current-context": "x",'
        f' "clusters": [{{"name": "c", "cluster": {{"server": "http://127.0.0.1:{port}"}}}}],'
        ' "users": [{"name": "u", "user": {"token": "t"}}],'
        ' "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]}'
    )
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    helm = FakeHelm()
    with pytest.raises(ClusterError, match="did not answer"):
        _run(helm, charts, tmp_path)
    assert helm.calls == []
    del api


# ------------------------------------------------------------------ real helm


def _helm_binaries():
    found = sorted(str(p) for p in (ROOT / ".venv" / "tools").glob("helm-v*/helm"))
    return found or [None]  # None: whatever helm clara_wf.helm finds


@pytest.mark.parametrize("binary", _helm_binaries())
def test_real_helm_install_command_for_the_workflow(tmp_path, binary):
    helm_mod = pytest.importorskip("clara_wf.helm")
    try:
        helm = helm_mod.Helm(binary)
        major = helm.major
    except Exception as exc:  # noqa: BLE001 - no helm binary here
        pytest.skip(f"helm not available: {exc}")
    chart = ROOT / "charts" / "clara-workflow"
    values = workflow_set_string(workflow_id="ai-only", job_id="00000000-0000-0000-0000-000000000000",
                                             payloads_host_path=Path("/data/my test,data=1"),
                                             trtis_uri=triton.trtis_uri("trtis", "clara"))
    argv = helm.install_command(RELEASE, chart, namespace="clara", set_string=values, wait=True, timeout="20s",
                                kube_context="gpu")
    assert argv[1:4] == ["install", RELEASE, str(chart)]
    assert argv[argv.index("--namespace") + 1] == "clara"
    assert argv[argv.index("--kube-context") + 1] == "gpu"
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "--set-string"]
    assert [p.split("=", 1)[0] for p in pairs] == list(values)
    assert "trtisUri=trtis\\.clara:8000" in pairs
    assert "workflow.payloads.hostPath=/data/my test\\,data\\=1" in pairs
    assert "dicomAdapter.input=" in pairs
    assert ("--wait=watcher" if major >= 4 else "--wait") in argv
    assert not any(KEY in a for a in argv)


# ------------------------------------------------------------------ real cluster


def _cluster_or_skip():
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("needs a Kubernetes cluster: set KUBECONFIG")
    ok, reason = kube.probe()
    if not ok:
        pytest.skip(f"needs a Kubernetes cluster: {reason}")


@pytest.mark.cluster
def test_cluster_end_to_end_secret_and_a_busybox_job(tmp_path):
    """Real cluster only: setkey twice, then a one-container Job watched to its end with its log."""
    _cluster_or_skip()
    from kubernetes import client

    ns = os.environ.get("CLARA_WF_TEST_NAMESPACE", "default")
    name = "clara-wf-e2e-" + uuid.uuid4().hex[:8]
    with kube.Kube(ns) as k:
        key = "e2e-" + uuid.uuid4().hex
        assert kube.set_ngc_api_key(ns, key, None) in ("created", "replaced")
        assert kube.set_ngc_api_key(ns, key, None) == "replaced"
        body = client.V1Job(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1JobSpec(backoff_limit=0, template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
                restart_policy="Never",
                containers=[client.V1Container(name="hello", image=os.environ.get("CLARA_WF_TEST_IMAGE", "busybox:1.36"),
                                               command=["sh", "-c", "echo hello from clara-wf; sleep 2"])],
            ))),
        )
        k.batch.create_namespaced_job(ns, body)
        try:
            events = []
            outcome = k.watch_job(name, stages=["hello"], timeout=300, on_event=events.append)
            assert outcome.succeeded, outcome.message
            assert LogLine("hello", "hello from clara-wf") in events
        finally:
            k.batch.delete_namespaced_job(name, ns, propagation_policy="Background")
