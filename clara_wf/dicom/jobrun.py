"""Run one adapter job: the workflow on the job's payload through ``run_test`` (the same
entry point as ``clara-wf test``), with the chart's ``dicomAdapter.input/output`` set so
that the first stage reads the received files and the last stage writes what is exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

from clara_wf.events import Event, EventSink, ignore
from clara_wf.project import Project

DEFAULT_INPUT = "dicom-server"  # the chart's defaults (seed 003's values.yaml)
DEFAULT_OUTPUT = "output"


def adapter_folders(project: Project) -> Tuple[str, str]:
    """The chart's ``dicomAdapter.input`` / ``.output`` (its defaults when the chart leaves them empty)."""
    from clara_wf import values_edit

    block = values_edit.read_values(project.values_file).get("dicomAdapter") or {}
    block = block if isinstance(block, dict) else {}
    return str(block.get("input") or DEFAULT_INPUT), str(block.get("output") or DEFAULT_OUTPUT)


def release_name(job_id: str) -> str:
    """One release per job, so that jobs may run side by side (43 characters: a valid release name)."""
    return f"wf-{job_id}"


def clear_interrupted(job_id: str, engine: str, *, namespace: str = "default",
                      kube_context: Optional[str] = None) -> bool:
    """Before a job interrupted mid-run (adapter killed) runs again: remove what the engine
    left that would refuse a new run - on Kubernetes, the job's release. True when removed."""
    if engine != "kubernetes":
        return False  # the local engine's processes died with the adapter (PDEATHSIG); nothing stays
    from clara_wf.helm import Helm

    helm = Helm()
    release = release_name(job_id)
    if not helm.release_exists(release, namespace=namespace, kube_context=kube_context):
        return False
    helm.uninstall(release, namespace=namespace, kube_context=kube_context)
    return True


class _Forward:
    """run_test's display: hands each event to the adapter; nothing to close."""

    def __init__(self, on_event: EventSink):
        self.on_event = on_event

    def __call__(self, event: Event) -> None:
        self.on_event(event)

    def close(self) -> None:
        pass


def run_job(project: Project, workflow_id: str, job_id: str, *, payload_root: Path, input_folder: str,
            output_folder: str, job_name: str, engine: str, timeout: float = 3600, on_event: EventSink = ignore,
            namespace: str = "default", kube_context: Optional[str] = None,
            host_payload_root: Optional[str] = None, trtis_uri: Optional[str] = None,
            note: Callable[[str], None] = lambda message: None):
    """Run the workflow for one job; run_test's TestResult (``succeeded``, ``outcome``, ``record_path``).

    ``host_payload_root``: where the workflow's pods find ``payload_root`` (a node path), when
    it differs from the adapter's own view of it (the adapter in a pod, the Kubernetes engine).
    """
    from clara_wf.run import run_test

    overrides = {"dicomAdapter.input": input_folder, "dicomAdapter.output": output_folder}
    if host_payload_root:
        overrides["workflow.payloads.hostPath"] = host_payload_root

    def display(stages: Sequence[str]) -> _Forward:
        return _Forward(on_event)

    return run_test(project, workflow_id, job_id, engine=engine, release=release_name(job_id), namespace=namespace,
                    kube_context=kube_context, timeout=timeout, job_name=job_name, payloads_root=Path(payload_root),
                    overrides=overrides, display=display, note=note, trtis_uri=trtis_uri)
