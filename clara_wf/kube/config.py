"""Which cluster: the kubeconfig (optionally a named context) or in-cluster configuration, and a
quick probe of whether it answers."""

from __future__ import annotations

import json
import os
import threading
from typing import Any, List, Optional, Tuple

from clara_wf.errors import ClusterError
from clara_wf.kube.errors import describe_exception, one_line

PROBE_TIMEOUT = 2.0
CONNECT_TIMEOUT = 10.0


def _kubeconfig_path(kubeconfig: Optional[str]) -> str:
    # kubernetes.config reads $KUBECONFIG once, when it is imported; read it now instead.
    return kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def _kubeconfig_exists(path: str) -> bool:
    return any(p and os.path.exists(os.path.expanduser(p)) for p in path.split(os.pathsep))


def load_configuration(kube_context: Optional[str] = None, *, kubeconfig: Optional[str] = None) -> Any:
    """A ``kubernetes.client.Configuration`` from the kubeconfig (with ``kube_context``) or in-cluster."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    path = _kubeconfig_path(kubeconfig)
    if not _kubeconfig_exists(path):
        if kube_context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                config.load_incluster_config(client_configuration=cfg)
                return cfg
            except ConfigException as exc:
                raise ClusterError(f"in-cluster Kubernetes configuration is unusable: {exc}") from None
        raise ClusterError(
            f"no Kubernetes configuration: {path} does not exist; set KUBECONFIG to your cluster's kubeconfig"
        )
    try:
        config.load_kube_config(config_file=path, context=kube_context, client_configuration=cfg, persist_config=False)
    except ConfigException as exc:
        where = f"context {kube_context!r} in {path}" if kube_context else path
        raise ClusterError(f"cannot use the Kubernetes configuration ({where}): {one_line(str(exc))}") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, yaml_error()) as exc:
        # a malformed kubeconfig can make the loader fail in many shapes
        raise ClusterError(f"cannot read the Kubernetes configuration {path}: {one_line(str(exc)) or type(exc).__name__}") from None
    return cfg


def yaml_error() -> "type[Exception]":
    """PyYAML's base error (the kubeconfig loader parses with it); a kubeconfig that is not YAML."""
    import yaml

    return yaml.YAMLError


def load_api_client(kube_context: Optional[str] = None, *, kubeconfig: Optional[str] = None, retries: Any = None) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``kube_context`` (or the current context / in-cluster)."""
    from kubernetes import client

    cfg = load_configuration(kube_context, kubeconfig=kubeconfig)
    if retries is not None:
        cfg.retries = retries
    return client.ApiClient(cfg)


def probe(kube_context: Optional[str] = None, *, kubeconfig: Optional[str] = None, timeout: float = PROBE_TIMEOUT) -> Tuple[bool, str]:
    """Does the (current) context answer? ``(True, "<host> answers (Kubernetes vX)")`` or ``(False, reason)``.

    Never raises and never takes much longer than ``timeout`` seconds: the work runs in a
    daemon thread (kubeconfig exec plugins can be slow) and the request has no retries.
    """
    result: List[Tuple[bool, str]] = []

    def attempt() -> None:
        try:
            api_client = load_api_client(kube_context, kubeconfig=kubeconfig, retries=False)
        except ClusterError as exc:
            result.append((False, str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - a probe reports, it does not raise
            result.append((False, f"cannot load the Kubernetes configuration: {type(exc).__name__}"))
            return
        host = api_client.configuration.host
        try:
            from kubernetes import client

            # raw answer: only "does it answer" matters, not whether every field validates
            resp: Any = client.VersionApi(api_client).get_code(_preload_content=False, _request_timeout=(timeout, timeout))
            try:
                version = json.loads(resp.data or b"{}").get("gitVersion") or "version unknown"
            except (ValueError, AttributeError):
                version = "version unknown"
            result.append((True, f"{host} answers (Kubernetes {version})"))
        except Exception as exc:  # noqa: BLE001
            result.append((False, f"{host} does not answer: {describe_exception(exc)}"))
        finally:
            api_client.close()

    thread = threading.Thread(target=attempt, name="clara-wf-kube-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.25)
    if not result:
        return False, f"the Kubernetes API did not answer within {timeout:g} s"
    return result[0]
