"""The trtis chart on a cluster: installed when missing and waited for, by `install_trtis` and by
`test --engine kubernetes` alike (``ensure``); removed by `uninstall_trtis`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Tuple

from clara_wf.errors import InputError
from clara_wf.events import EventSink, Info, ignore
from clara_wf.helm import HelmLike, chart_fullname, helm_timeout
from clara_wf.triton import DEFAULT_RELEASE

CHART_NAME = "trtis"
HTTP_PORT = 8000
DEFAULT_TIMEOUT_S = 600.0


def service_name(release: str = DEFAULT_RELEASE) -> str:
    """Name of the Service (and Deployment) the trtis chart creates for ``release``."""
    return chart_fullname(release, CHART_NAME)


def trtis_uri(release: str = DEFAULT_RELEASE, namespace: str = "default") -> str:
    """What ``test`` passes as ``trtisUri``: ``<service>.<namespace>:8000``."""
    return f"{service_name(release)}.{namespace}:{HTTP_PORT}"


def find_chart(path: Path) -> Path:
    """The trtis chart folder, given it or a project root."""
    chart = Path(path)
    if not (chart / "Chart.yaml").is_file() and (chart / "charts" / CHART_NAME / "Chart.yaml").is_file():
        chart = chart / "charts" / CHART_NAME
    if not (chart / "Chart.yaml").is_file():
        raise InputError(f"{chart} is not the trtis Helm chart (no Chart.yaml there)")
    return chart


def ensure(helm: HelmLike, kube: Any, chart: Path, *, release: str, namespace: str, kube_context: Optional[str],
           timeout: float = DEFAULT_TIMEOUT_S, on_event: EventSink = ignore,
           installed: Optional[List[str]] = None) -> Tuple[str, bool]:
    """helm install ``chart`` unless ``release`` exists, then wait until its Deployment is ready.

    Returns ``(uri, already_installed)``. A release this installs is appended to
    ``installed`` before helm runs, so a caller cleans up a half-done install too.
    """
    already = helm.release_exists(release, namespace=namespace, kube_context=kube_context)
    if already:
        on_event(Info(f"Triton (release {release}) is already installed in namespace {namespace}"))
    else:
        on_event(Info(f"Triton is not deployed; installing release {release} in namespace {namespace}"))
        if installed is not None:
            installed.append(release)
        # wait=False: the wait below fails at once on an image that cannot be pulled
        helm.install(release, chart, namespace=namespace, set_string={}, wait=False,
                     timeout=helm_timeout(timeout), kube_context=kube_context)
    name = service_name(release)
    kube.wait_deployment_ready(name, timeout=timeout, on_event=on_event, what=f"Triton deployment {name}")
    uri = trtis_uri(release, namespace)
    on_event(Info(f"Triton is ready at {uri}"))
    return uri, already


def install_trtis(
    helm: HelmLike,
    trtis_chart: Path,
    release: str = DEFAULT_RELEASE,
    namespace: str = "default",
    kube_context: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    on_event: EventSink = ignore,
    *,
    kubeconfig: Optional[str] = None,
) -> Tuple[str, bool]:
    """`clara-wf install_trtis`: ``ensure`` the release. ``trtis_chart`` is the chart folder
    (``charts/trtis``) or a project root."""
    from clara_wf.kube import Kube

    chart = find_chart(trtis_chart)
    with Kube(namespace, kube_context, kubeconfig=kubeconfig) as kube:
        return ensure(helm, kube, chart, release=release, namespace=namespace, kube_context=kube_context,
                      timeout=timeout, on_event=on_event)


def uninstall_trtis(
    helm: HelmLike,
    release: str = DEFAULT_RELEASE,
    namespace: str = "default",
    kube_context: Optional[str] = None,
    on_event: EventSink = ignore,
) -> bool:
    """helm uninstall the Triton release; False (and a message) when it is not installed."""
    if not helm.release_exists(release, namespace=namespace, kube_context=kube_context):
        on_event(Info(f"Triton (release {release}) is not installed in namespace {namespace}; nothing to do"))
        return False
    helm.uninstall(release, namespace=namespace, kube_context=kube_context)
    on_event(Info(f"release {release} uninstalled"))
    return True
