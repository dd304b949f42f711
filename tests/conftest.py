"""Fixtures shared by the tests (helpers to import are in tests/helpers/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from container_helpers import container_rt, stage_image  # noqa: F401 - fixtures of the container tests (session-wide)
from helpers import copy_project
from helpers.fake_kube_api import FakeKubeAPI


@pytest.fixture
def project(tmp_path) -> Path:
    """A private copy of the project's charts and sample job."""
    return copy_project(tmp_path / "project")


@pytest.fixture
def api(tmp_path, monkeypatch):
    """The HTTP-level fake Kubernetes API, with KUBECONFIG pointing at it."""
    with FakeKubeAPI() as server:
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield server
