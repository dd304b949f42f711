"""clara_wf.triton_local against a real tritonserver (the one nvidia-pytriton bundles).

Fast tests cover validation, records and error messages without starting anything; the
`slow` ones start real servers (one shared by the module, plus two short-lived ones for
stop and for a model that fails to load) and always stop them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.triton import MODEL_NAME, MODELS, free_port, triton_server

from clara_wf import processes
from clara_wf.errors import ExternalToolError, InputError
from clara_wf.triton import local as triton_local


def _write_model(repo: Path, name: str = "m", *, config: bool = True, version: bool = True) -> Path:
    model = repo / name
    model.mkdir(parents=True)
    if config:
        (model / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "python"\n')
    if version:
        (model / "1").mkdir()
    return model


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


# --------------------------------------------------------------------------- fast


@pytest.mark.parametrize(
    "layout, fragment",
    [
        ("missing", "does not exist"),
        ("file", "is not a folder"),
        ("empty", "holds no model folder"),
        ("no-config", "has no config.pbtxt"),
        ("no-version", "has no version folder"),
    ],
)
def test_bad_model_repository_is_refused_before_starting(tmp_path, layout, fragment):
    repo = tmp_path / "models"
    if layout == "file":
        repo.write_text("not a folder")
    elif layout != "missing":
        repo.mkdir()
        if layout == "no-config":
            _write_model(repo, "seg", config=False)
        elif layout == "no-version":
            _write_model(repo, "seg", version=False)
    state = tmp_path / "state"
    with pytest.raises(InputError) as info:
        triton_local.start(state, repo, timeout=5)
    assert fragment in _one_line(info.value)
    assert str(repo.name) in str(info.value)
    assert not (state / "triton.json").exists()


def test_validate_accepts_the_project_repository():
    assert triton_local.validate_model_repository(MODELS) == MODELS.resolve()


def test_stop_and_status_when_none_was_started(tmp_path):
    assert triton_local.stop(tmp_path) is False
    assert triton_local.status(tmp_path) is None


def test_stale_record_is_cleaned_up(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {
        "pid": dead.pid, "http_port": 1, "grpc_port": 2, "metrics_port": 3,
        "model_repository": str(MODELS), "started_at": "then", "log": str(tmp_path / "triton.log"),
    }
    (tmp_path / "triton.json").write_text(json.dumps(record))
    assert triton_local.status(tmp_path) is None
    assert not (tmp_path / "triton.json").exists()
    (tmp_path / "triton.json").write_text(json.dumps(record))
    assert triton_local.stop(tmp_path) is False
    assert not (tmp_path / "triton.json").exists()


def test_record_of_a_recycled_pid_is_not_trusted(tmp_path):
    """A live pid that is not a tritonserver (pid reused) is not 'our' server, and is not killed."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        record = {
            "pid": other.pid, "http_port": 1, "grpc_port": 2, "metrics_port": 3,
            "model_repository": str(MODELS), "started_at": "then", "log": "x",
        }
        (tmp_path / "triton.json").write_text(json.dumps(record))
        assert triton_local.stop(tmp_path) is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_garbage_record_is_ignored(tmp_path):
    (tmp_path / "triton.json").write_text("{not json")
    assert triton_local.status(tmp_path) is None
    assert not (tmp_path / "triton.json").exists()


def test_wait_ready_names_an_unreachable_uri():
    uri = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ExternalToolError) as info:
        triton_local.wait_ready(uri, timeout=0.3)
    message = _one_line(info.value)
    assert f"Triton at {uri} is not reachable" in message
    assert "clara-wf install_trtis --local" in message
    assert time.monotonic() - started < 5


def test_missing_pytriton_gives_the_install_hint(monkeypatch):
    monkeypatch.setattr(triton_local.util, "find_spec", lambda name: None)
    with pytest.raises(ExternalToolError, match=r"Triton is not installed in this environment: run `make setup`"):
        triton_local.find_distribution()


def test_numpy_2_is_refused(monkeypatch):
    monkeypatch.setattr(triton_local.metadata, "version", lambda name: "2.1.0")
    with pytest.raises(ExternalToolError, match=r"numpy 2.1.0 .*numpy<2"):
        triton_local.check_numpy()


def test_busy_http_port_is_refused(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InputError, match=f"port {port} is already in use"):
            triton_local.start(tmp_path, MODELS, http_port=port, timeout=5)
    assert not (tmp_path / "triton.json").exists()


def test_distribution_is_complete():
    dist = triton_local.find_distribution()
    assert dist.binary.is_file() and os.access(dist.binary, os.X_OK)
    assert dist.stub.is_file() and dist.libs.is_dir()


# --------------------------------------------------------------------------- slow: real servers


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    yield from triton_server(tmp_path_factory.mktemp("triton-state"))


@pytest.mark.slow
def test_start_records_a_ready_server(triton):
    assert triton.ready and not triton.already_running
    assert triton.uri == f"127.0.0.1:{triton.http_port}"
    assert len({triton.http_port, triton.grpc_port, triton.metrics_port}) == 3
    state = triton.log.parent
    record = json.loads((state / "triton.json").read_text())
    assert record["pid"] == triton.pid and record["http_port"] == triton.http_port
    assert record["model_repository"] == str(MODELS.resolve())
    assert {"grpc_port", "metrics_port", "started_at", "log"} <= set(record)
    assert triton_local.is_ready(triton.uri)
    triton_local.wait_ready(triton.uri, timeout=5, model=MODEL_NAME)
    metrics = subprocess.run(
        ["curl", "-sf", f"http://127.0.0.1:{triton.metrics_port}/metrics"], capture_output=True, text=True
    ) if shutil.which("curl") else None
    if metrics is not None:
        assert "nv_inference_request_success" in metrics.stdout


@pytest.mark.slow
def test_start_twice_returns_the_running_one(triton):
    state = triton.log.parent
    again = triton_local.start(state, MODELS, timeout=5)
    assert again.already_running and again.ready
    assert again.pid == triton.pid and again.uri == triton.uri
    current = triton_local.status(state)
    assert current is not None and current.ready and current.pid == triton.pid


@pytest.mark.slow
def test_start_with_another_repository_while_running_is_refused(triton, tmp_path):
    other = tmp_path / "models"
    shutil.copytree(MODELS, other)
    with pytest.raises(InputError, match="already serves") as info:
        triton_local.start(triton.log.parent, other, timeout=5)
    assert "uninstall_trtis --local" in _one_line(info.value)


@pytest.mark.slow
def test_wait_ready_names_a_missing_model(triton):
    with pytest.raises(ExternalToolError, match=f"Triton at {triton.uri} does not serve model 'no_such_model'"):
        triton_local.wait_ready(triton.uri, timeout=5, model="no_such_model")


@pytest.mark.slow
def test_stop_ends_the_server_and_its_stubs(tmp_path):
    notes = []
    instance = triton_local.start(tmp_path, MODELS, progress=notes.append, timeout=120)
    try:
        assert notes and all(isinstance(n, str) for n in notes)
        group = subprocess.run(["pgrep", "-g", str(instance.pid)], capture_output=True, text=True).stdout.split()
        assert str(instance.pid) in group and len(group) >= 2  # server + python backend stub
        assert list(Path("/dev/shm").glob(f"{instance.shm_prefix}*"))
    finally:
        stopped = triton_local.stop(tmp_path)
    assert stopped is True
    assert not (tmp_path / "triton.json").exists()
    assert not processes.alive(instance.pid)
    assert subprocess.run(["pgrep", "-g", str(instance.pid)], capture_output=True).returncode == 1
    assert not list(Path("/dev/shm").glob(f"{instance.shm_prefix}*"))
    assert not triton_local.is_ready(instance.uri)
    assert triton_local.stop(tmp_path) is False


@pytest.mark.slow
def test_model_that_fails_to_load_reports_the_log(tmp_path):
    repo = tmp_path / "models"
    model = _write_model(repo, "broken")
    (model / "config.pbtxt").write_text(
        'name: "broken"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "X" data_type: TYPE_FP32 dims: [ 1 ] }]\n'
        'output [{ name: "Y" data_type: TYPE_FP32 dims: [ 1 ] }]\n'
    )
    (model / "1" / "model.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('weights file is missing')\n"
    )
    state = tmp_path / "state"
    with pytest.raises(ExternalToolError) as info:
        triton_local.start(state, repo, timeout=120)
    message = _one_line(info.value)
    assert message.startswith("Triton exited during start-up")
    assert "weights file is missing" in message
    assert f"full log: {state / 'triton.log'}" in message
    assert not (state / "triton.json").exists()
    assert "weights file is missing" in (state / "triton.log").read_text()


def test_static_python_without_libpython_is_refused(monkeypatch, tmp_path):
    import ctypes.util

    monkeypatch.setattr(triton_local.sysconfig, "get_config_var", lambda name: str(tmp_path))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(ExternalToolError, match=r"needs libpython3\.\d+\.so\.1\.0.*--enable-shared"):
        triton_local.check_libpython()


def test_this_python_has_libpython():
    triton_local.check_libpython()
