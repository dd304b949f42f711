"""Triton for developers: install_trtis --local --model-repository DIR, `clara-wf models` (Triton's
POST /v2/repository/index), a model that fails to load named with its error while the others serve."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import REPO, assert_error_last_line, assert_one_line_error, run_cli

BROKEN_CONFIG = """name: "broken"
backend: "python"
max_batch_size: 0
input [ { name: "IN", data_type: TYPE_FP32, dims: [ 1 ] } ]
output [ { name: "OUT", data_type: TYPE_FP32, dims: [ 1 ] } ]
"""
BROKEN_MODEL = 'class TritonPythonModel:\n    def initialize(self, args):\n        raise RuntimeError("weights file missing: model.onnx")\n'


def test_models_without_a_local_triton_is_one_line(project):
    assert_one_line_error(run_cli("models", cwd=project), 2, "no local Triton is running",
                          "install_trtis --local [--model-repository DIR]")


def test_model_repository_is_for_local_only(project):
    assert_one_line_error(run_cli("install_trtis", "--model-repository", "x", cwd=project), 2,
                          "--model-repository is for --local")


@pytest.mark.helm
def test_test_takes_its_model_repository(project, tmp_path):
    shutil.copytree(REPO / "apps", project / "apps")
    (project / "test-data" / "00000000-0000-0000-0000-000000000000" / "ai-vnet" / "input" / "x.mhd").write_text("")
    result = run_cli("test", "--engine", "local", "--model-repository", str(tmp_path / "nope"), cwd=project)
    assert_error_last_line(result, 2, f"model repository {tmp_path / 'nope'} does not exist")


@pytest.mark.slow
def test_a_broken_model_is_named_with_its_error_while_the_others_serve(project, tmp_path):
    repo = tmp_path / "my models"
    shutil.copytree(REPO / "test-data" / "models" / "segmentation_ct_v1", repo / "segmentation_ct_v1")
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text(BROKEN_CONFIG)
    (repo / "broken" / "1" / "model.py").write_text(BROKEN_MODEL)
    started = run_cli("install_trtis", "--local", "--model-repository", str(repo), cwd=project)
    try:
        assert started.returncode == 0, started.stderr
        assert "warning: model 'broken' did not load (Internal: RuntimeError: weights file missing: model.onnx)" \
            in started.stderr
        listed = run_cli("models", cwd=project)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines() == [
            "broken              1    UNAVAILABLE: Internal: RuntimeError: weights file missing: model.onnx",
            "segmentation_ct_v1  1    READY",
        ]
        entries = {e["name"]: e for e in json.loads(run_cli("models", "-o", "json", cwd=project).stdout)}
        assert entries["segmentation_ct_v1"]["state"] == "READY" and "model.py" in entries["broken"]["reason"]
        uri = started.stdout.strip().rsplit("NVIDIA_CLARA_TRTISURI=", 1)[1]
        assert run_cli("models", "--trtis-uri", uri, cwd=project).stdout == listed.stdout
    finally:
        run_cli("uninstall_trtis", "--local", cwd=project)
