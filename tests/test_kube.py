"""clara_wf.kube / kube_engine without any server: names, values, secret encoding, config, probe.

Nothing here needs a cluster or the fake API server; the probe tests use loopback ports
that refuse or never answer.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clara_wf import kube
from clara_wf.engines import kubernetes as kube_engine
from clara_wf.errors import ClusterError, InputError
from clara_wf.events import Info, JobOutcome, LogLine, StageUpdate
from clara_wf.helm import chart_fullname
from clara_wf.triton import cluster as triton
from clara_wf.workflow import workflow_set_string

ROOT = Path(__file__).resolve().parent.parent
KEY = "nvapi-TESTKEY-0123456789abcdef"


def test_importing_kube_modules_does_not_import_kubernetes():
    code = (
        "import sys; import clara_wf.kube, clara_wf.engines.kubernetes, clara_wf.events; "
        "print('kubernetes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dockerconfigjson_has_nvcr_io_user_oauthtoken_and_auth():
    doc = json.loads(base64.b64decode(kube.dockerconfigjson(KEY)))
    entry = doc["auths"]["nvcr.io"]
    assert entry["username"] == "$oauthtoken"
    assert entry["password"] == KEY
    assert base64.b64decode(entry["auth"]).decode() == f"$oauthtoken:{KEY}"
    assert list(doc) == ["auths"] and list(doc["auths"]) == ["nvcr.io"]


def test_redactor_removes_key_and_its_encodings():
    redact = kube.Redactor(KEY)
    text = " ".join([KEY, kube.dockerconfigjson(KEY), base64.b64encode(f"$oauthtoken:{KEY}".encode()).decode()])
    cleaned = redact(text)
    assert KEY not in cleaned
    assert kube.dockerconfigjson(KEY) not in cleaned
    assert cleaned.count("***") == 3


@pytest.mark.parametrize("bad", ["", "   ", "two words", "tab\tkey"])
def test_empty_or_spaced_key_is_an_input_error_without_the_key(bad):
    with pytest.raises(InputError) as info:
        kube.validate_key(bad)
    if bad.strip():
        assert bad not in str(info.value)


def test_set_ngc_api_key_rejects_empty_key_before_loading_any_config(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(InputError):
        kube.set_ngc_api_key("default", "  ", None)


@pytest.mark.parametrize(
    "release,chart,expected",
    [
        ("test-wf", "clara-workflow", "test-wf-clara-workflow"),
        ("my-clara-workflow", "clara-workflow", "my-clara-workflow"),
        ("trtis", "trtis", "trtis"),
        ("my-trtis-1", "trtis", "my-trtis-1"),
        ("triton", "trtis", "triton-trtis"),
        ("a" * 60, "trtis", "a" * 60 + "-tr"),
        ("a" * 62, "clara-workflow", "a" * 62),  # cut at 63 then the trailing "-" trimmed
    ],
)
def test_chart_fullname_follows_helm_create_rule(release, chart, expected):
    assert chart_fullname(release, chart) == expected


def test_trtis_uri_is_service_dot_namespace_port_8000():
    assert triton.trtis_uri() == "trtis.default:8000"
    assert triton.trtis_uri("triton", "clara") == "triton-trtis.clara:8000"
    assert kube_engine.workflow_job_name("test-wf") == "test-wf-clara-workflow"


def test_workflow_set_string_is_the_seed_call(tmp_path):
    values = workflow_set_string(
        workflow_id="ai-only",
        job_id="00000000-0000-0000-0000-000000000000",
        payloads_host_path=tmp_path / "test-data",
        trtis_uri="trtis.default:8000",
    )
    assert list(values) == [
        "runSimple", "workflow.id", "workflow.payloads.hostPath", "job.id", "job.name",
        "trtisUri", "dicomAdapter.input", "dicomAdapter.output",
    ]
    assert values["runSimple"] == "TRUE"
    assert values["job.name"] == "Test Job"
    assert values["workflow.payloads.hostPath"] == str(tmp_path / "test-data")
    assert Path(values["workflow.payloads.hostPath"]).is_absolute()
    assert values["dicomAdapter.input"] == values["dicomAdapter.output"] == ""


def test_workflow_set_string_makes_relative_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = workflow_set_string(workflow_id="w", job_id="j", payloads_host_path=Path("test-data"),
                                             trtis_uri="u", run_simple=False)
    assert values["workflow.payloads.hostPath"] == str(tmp_path / "test-data")
    assert values["runSimple"] == "FALSE"


def test_events_are_plain_dataclasses():
    assert StageUpdate("a", "done", exit_code=0) == StageUpdate("a", "done", "", 0)
    assert LogLine("a", "x").stage == "a" and Info("x").text == "x"
    outcome = JobOutcome(True, {})
    assert outcome.failed_stage is None and not outcome.timed_out


# ------------------------------------------------------------------ config and probe


def _kubeconfig(path: Path, server: str, context: str = "c1") -> Path:
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "k", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": context, "context": {"cluster": "k", "user": "u"}}],
    }
    path.write_text(json.dumps(doc))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_kubeconfig_is_a_cluster_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ClusterError, match="nope.yaml does not exist"):
        kube.load_configuration()


def test_unknown_context_is_a_cluster_error(tmp_path, monkeypatch):
    cfg = _kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    with pytest.raises(ClusterError, match="context 'other'"):
        kube.load_configuration("other")
    assert kube.load_configuration("c1").host == "http://127.0.0.1:1"


def test_probe_without_kubeconfig_says_so_quickly(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    start = time.monotonic()
    ok, reason = kube.probe()
    assert not ok and "does not exist" in reason
    assert time.monotonic() - start < 2.0


def test_probe_connection_refused_is_false_fast(tmp_path):
    cfg = _kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{_free_port()}")
    start = time.monotonic()
    ok, reason = kube.probe(kubeconfig=str(cfg))
    assert not ok and "connection refused" in reason
    assert time.monotonic() - start < 2.0


def test_probe_server_that_never_answers_gives_up_within_about_2_seconds(tmp_path):
    # a listening socket that accepts (backlog) but never sends a byte
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        cfg = _kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{srv.getsockname()[1]}")
        start = time.monotonic()
        ok, reason = kube.probe(kubeconfig=str(cfg))
        elapsed = time.monotonic() - start
    assert not ok
    assert "timed out" in reason or "did not answer" in reason
    assert elapsed < 2.6
