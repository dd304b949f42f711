"""`test --engine kubernetes`: the workflow chart installed with helm, its Job watched on the cluster.

Orchestration only: helm runs through the ``Helm`` object the caller passes (see
``clara_wf.helm``), the Kubernetes API through ``clara_wf.kube``. Progress goes to the
caller's ``on_event`` callback as ``clara_wf.events`` objects; nothing here prints or
exits. Validation of the workflow, the job id and test-data happens before these run.

``run_workflow`` follows the order of issue 5 section 3: pull secret (created from a key
at hand, else an error naming ``clara-wf setkey``), Triton (installed when missing), helm
install of the workflow, watch of its Job with per-stage logs, and, unless ``keep``,
uninstall of every release it installed itself, also when interrupted (Ctrl-C).
Triton's install-and-wait is ``clara_wf.triton.cluster.ensure`` (shared with install_trtis).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from clara_wf import engines, redaction
from clara_wf.engines.base import RunPlan
from clara_wf.errors import ClaraWfError, ClusterError, InputError
from clara_wf.events import Event, EventSink, Info, JobOutcome, TritonReady, ignore
from clara_wf.helm import HelmLike, chart_fullname, helm_timeout
from clara_wf.triton import cluster as triton

WORKFLOW_CHART_NAME = "clara-workflow"


def workflow_job_name(release: str) -> str:
    """Name of the Job the clara-workflow chart creates for ``release``."""
    return chart_fullname(release, WORKFLOW_CHART_NAME)


def _kube(namespace: str, kube_context: Optional[str], kubeconfig: Optional[str]) -> Any:
    from clara_wf.kube import Kube

    return Kube(namespace, kube_context, kubeconfig=kubeconfig)


# --------------------------------------------------------------------------- test


def run_workflow(
    helm: HelmLike,
    chart_dir: Path,
    release: str,
    namespace: str,
    kube_context: Optional[str],
    set_string: Dict[str, str],
    timeout: float,
    keep: bool,
    on_event: Callable[[Event], None] = ignore,
    ngc_key: Optional[str] = None,
    *,
    stages: Optional[List[str]] = None,
    trtis_release: Optional[str] = triton.DEFAULT_RELEASE,
    trtis_chart: Optional[Path] = None,
    trtis_timeout: float = triton.DEFAULT_TIMEOUT_S,
    kubeconfig: Optional[str] = None,
) -> JobOutcome:
    """Run one workflow on the cluster: the issue's ``test --engine kubernetes`` after validation.

    ``set_string`` holds the run-time values (see ``workflow_set_string``); its
    ``trtisUri`` is replaced by the URI of the Triton release this ensures, unless
    ``trtis_release`` is None (then Triton is not managed and ``trtisUri`` is used as
    given). ``stages`` (the workflow's stage names, in order) lets the display show every
    stage as waiting from the start; without it stages appear as their containers do.
    ``timeout`` bounds the Job (seconds from the helm install). Returns a JobOutcome;
    raises ClusterError / ExternalToolError / InputError when the run cannot happen.
    """
    chart_dir = Path(chart_dir)
    values = dict(set_string)
    installed: List[str] = []  # releases this call installed, in install order
    job_name = workflow_job_name(release)

    kube = _kube(namespace, kube_context, kubeconfig)
    try:
        # 1. pull secret
        if not kube.secret_exists():
            if ngc_key:
                how = kube.apply_pull_secret(ngc_key)
                on_event(Info(f"secret nvcr.io {how} in namespace {namespace}"))
            else:
                raise ClusterError(
                    f"no pull secret nvcr.io in namespace {namespace}; run `clara-wf setkey` "
                    "(or set NGC_API_KEY) first"
                )
        # the workflow release must not be left over from an earlier run
        if helm.release_exists(release, namespace=namespace, kube_context=kube_context):
            raise InputError(
                f"release {release} already exists in namespace {namespace} (left by --keep?); "
                f"run `helm uninstall {release} -n {namespace}` or pass another --release"
            )
        # 2. Triton
        if trtis_release is not None:
            chart = Path(trtis_chart) if trtis_chart is not None else chart_dir.parent / triton.CHART_NAME
            values["trtisUri"], _ = triton.ensure(helm, kube, chart, release=trtis_release, namespace=namespace,
                                                  kube_context=kube_context, timeout=trtis_timeout,
                                                  on_event=on_event, installed=installed)
            on_event(TritonReady(values["trtisUri"]))
        # 3. the workflow: helm waits for the PVC (and, Helm 4, for the Job to start);
        # the Job itself is watched below, which fails fast on image-pull errors
        on_event(Info(f"installing release {release} (job {job_name}) in namespace {namespace}"))
        installed.append(release)
        helm.install(release, chart_dir, namespace=namespace, set_string=values, wait=True,
                     timeout=helm_timeout(timeout), kube_context=kube_context)
        # 4. watch
        outcome = kube.watch_job(job_name, stages=stages, timeout=timeout, on_event=on_event)
        return outcome
    finally:
        try:
            if not keep:
                _uninstall_all(helm, list(reversed(installed)), namespace, kube_context, on_event)
            elif installed:
                on_event(Info(f"kept release(s) {', '.join(installed)} in namespace {namespace} (--keep)"))
        finally:
            kube.close()


def _uninstall_all(helm: HelmLike, releases: List[str], namespace: str, kube_context: Optional[str],
                   on_event: Callable[[Event], None]) -> None:
    """Uninstall ``releases`` best-effort: a failure is reported, never raised over the run's own result."""
    for rel in releases:
        try:
            if not helm.release_exists(rel, namespace=namespace, kube_context=kube_context):
                continue
            helm.uninstall(rel, namespace=namespace, kube_context=kube_context)
            on_event(Info(f"release {rel} uninstalled"))
        except (ClaraWfError, OSError) as exc:
            on_event(Info(f"could not uninstall release {rel} ({exc}); run `helm uninstall {rel} -n {namespace}`"))
        except KeyboardInterrupt:
            on_event(Info(f"interrupted: release {rel} may remain; run `helm uninstall {rel} -n {namespace}`"))
            raise


# --------------------------------------------------------------------------- engine


class KubernetesEngine:
    """The workflow chart installed with helm; its Job watched on the cluster."""

    name = "kubernetes"
    uses_images = True

    def run(self, plan: RunPlan, sink: EventSink) -> JobOutcome:

        from clara_wf.helm import Helm

        run = plan.run
        return run_workflow(
            Helm(), run.project.chart_dir, release=plan.release, namespace=plan.namespace,
            kube_context=plan.kube_context, set_string=run.set_string(), timeout=plan.timeout, keep=plan.keep,
            on_event=sink, ngc_key=redaction.ngc_api_key(), stages=list(run.stages),
            trtis_release=triton.DEFAULT_RELEASE if run.needs_triton and not plan.trtis_uri else None,
            trtis_chart=run.project.trtis_chart_dir,
        )

    def planned_trtis_uri(self, plan: RunPlan) -> Optional[str]:
        """The Triton release this engine installs when the workflow needs one and none is given."""
        if plan.run.needs_triton and not plan.trtis_uri:
            return triton.trtis_uri(triton.DEFAULT_RELEASE, plan.namespace)
        return None


engines.register(KubernetesEngine())
