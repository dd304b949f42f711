"""install_trtis / uninstall_trtis with no cluster, or one that does not answer: setkey's one
line (never helm's raw "kubernetes cluster unreachable"), and the --local way."""

from __future__ import annotations

import socket

import pytest
from helpers import assert_one_line_error, run_cli


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the with ends: nothing listens there


def _kubeconfig(path, server: str):
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: c\n  cluster: {{server: \"{server}\"}}\n"
        "contexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n"
        "users:\n- name: u\n  user: {token: t}\n"
    )
    return path


def _setkey_line(project, env) -> str:
    result = run_cli("setkey", cwd=project, env={**env, "NGC_API_KEY": "nvapi-not-a-real-key"})
    assert result.returncode == 1
    return result.stderr.strip()


@pytest.mark.parametrize("command", ["install_trtis", "uninstall_trtis"])
def test_no_cluster_configured_is_setkeys_line_and_mentions_local(project, tmp_path, command):
    env = {"KUBECONFIG": str(tmp_path / "no-such-kubeconfig"), "KUBERNETES_SERVICE_HOST": ""}
    setkey = _setkey_line(project, env)
    assert setkey == f"clara-wf: no Kubernetes configuration: {tmp_path / 'no-such-kubeconfig'} does not exist; " \
                     "set KUBECONFIG to your cluster's kubeconfig"
    result = run_cli(command, cwd=project, env=env)
    assert_one_line_error(result, 1)
    assert result.stderr.strip() == f"{setkey}; or use `clara-wf {command} --local` for Triton on this machine"


@pytest.mark.parametrize("command", ["install_trtis", "uninstall_trtis"])
def test_unreachable_cluster_is_setkeys_line_and_mentions_local(project, tmp_path, command):
    server = f"https://127.0.0.1:{_closed_port()}"
    env = {"KUBECONFIG": str(_kubeconfig(tmp_path / "kubeconfig", server)), "KUBERNETES_SERVICE_HOST": ""}
    reason = f"the Kubernetes API at {server} did not answer (connection refused); check KUBECONFIG / --kube-context"
    assert _setkey_line(project, env).endswith(reason)
    result = run_cli(command, cwd=project, env=env)
    assert_one_line_error(result, 1, reason, f"`clara-wf {command} --local`")
    assert "Error:" not in result.stderr and "helm" not in result.stderr
