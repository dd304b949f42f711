"""Render the clara-workflow chart for a run, with the run-time values the real install uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from clara_wf.external import format_command
from clara_wf.helm import Helm, helm_timeout
from clara_wf.workflow import WorkflowRun


@dataclass
class DryRun:
    command: str  # the helm install line that a real run executes
    manifests: str  # what helm rendered


def dry_run(run: WorkflowRun, *, release: str, namespace: str, timeout: float = 600,
            kube_context: Optional[str] = None, helm: Optional[Helm] = None) -> DryRun:
    """The exact ``helm install`` line and the manifests, without touching a cluster.

    Helm 4 renders through ``helm install --dry-run=client`` (offline); Helm 3 needs a
    cluster for that, so it renders with ``helm template``.
    """
    helm = helm or Helm()
    values = run.set_string()
    # The same flags as the Kubernetes engine's install.
    command = format_command(helm.install_command(release, run.project.chart_dir, namespace=namespace,
                                                  set_string=values, kube_context=kube_context,
                                                  timeout=helm_timeout(timeout)))
    if helm.major >= 4:
        from clara_wf import external

        argv = helm.install_command(release, run.project.chart_dir, namespace=namespace, set_string=values,
                                    wait=False, dry_run=True)
        manifests = external.run(argv, what="helm install --dry-run=client",
                                 hint="fix the chart or the values it names").stdout
    else:
        manifests = helm.template(run.project.chart_dir, release, namespace=namespace, set_string=values)
    return DryRun(command=command, manifests=manifests)


def render_documents(run: WorkflowRun, *, release: str, namespace: str = "default",
                     helm: Optional[Helm] = None) -> List[dict]:
    """The rendered manifests as parsed documents (empty documents dropped)."""
    from clara_wf.values_edit import fast_yaml

    helm = helm or Helm()
    text = helm.template(run.project.chart_dir, release, namespace=namespace, set_string=run.set_string())
    return [doc for doc in fast_yaml().load_all(text) if doc]


def job_pod_spec(documents: List[dict]) -> dict:
    """The pod spec of the workflow's Job."""
    jobs = [d for d in documents if d.get("kind") == "Job"]
    if len(jobs) != 1:
        from clara_wf.errors import InputError

        raise InputError(f"the chart rendered {len(jobs)} Jobs; a workflow run needs exactly one")
    return jobs[0]["spec"]["template"]["spec"]
