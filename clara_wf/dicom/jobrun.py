"""Run one adapter job through an engine: the workflow on the job's payload, with the
chart's ``dicomAdapter.input/output`` set so that the first stage reads the received
files and the last stage writes what is exported.

This is the adapter's only contact with the engines; everything else in the adapter is
engine-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from clara_wf.events import EventSink, JobOutcome, ignore
from clara_wf.project import Project
from clara_wf.workflow import WorkflowRun

DEFAULT_INPUT = "dicom-server"  # the chart's defaults (seed 003's values.yaml)
DEFAULT_OUTPUT = "output"


def adapter_folders(project: Project) -> Tuple[str, str]:
    """The chart's ``dicomAdapter.input`` / ``.output`` (its defaults when the chart leaves them empty)."""
    from clara_wf import values_edit

    block = values_edit.read_values(project.values_file).get("dicomAdapter") or {}
    block = block if isinstance(block, dict) else {}
    return str(block.get("input") or DEFAULT_INPUT), str(block.get("output") or DEFAULT_OUTPUT)


@dataclass
class AdapterRun(WorkflowRun):
    """A WorkflowRun whose payloads live in the adapter's folder and whose first input and
    last output are the adapter's folders."""

    payload_root: Optional[Path] = None
    host_payload_root: Optional[str] = None  # the same folder as the workflow's pods see it (a node path)
    adapter_input: str = DEFAULT_INPUT
    adapter_output: str = DEFAULT_OUTPUT

    @property
    def payloads_host_path(self) -> Path:
        if self.host_payload_root:
            return Path(self.host_payload_root)
        return Path(self.payload_root).resolve() if self.payload_root else super().payloads_host_path

    def set_string(self) -> Dict[str, str]:
        values = super().set_string()
        values["dicomAdapter.input"] = self.adapter_input
        values["dicomAdapter.output"] = self.adapter_output
        return values


def plan(project: Project, workflow_id: str, job_id: str, *, payload_root: Path, input_folder: str,
         output_folder: str, job_name: str, host_payload_root: Optional[str] = None) -> AdapterRun:
    from clara_wf import workflow as wf

    base = wf.plan_run(project, workflow_id, job_id, job_name=job_name, need_test_data=False)
    fields = {k: getattr(base, k) for k in ("project", "workflow_id", "job_id", "job_name", "stages", "trtis_uri",
                                             "values", "definition")}
    return AdapterRun(**fields, job_dir=Path(payload_root) / job_id, payload_root=Path(payload_root),
                      host_payload_root=host_payload_root,
                      adapter_input=input_folder, adapter_output=output_folder)


def run(run: AdapterRun, *, engine: str, timeout: float = 3600, on_event: EventSink = ignore,
        namespace: str = "default", kube_context: Optional[str] = None, helm=None) -> JobOutcome:
    """Run the job with the chosen engine (``local`` or ``kubernetes``)."""
    release = f"wf-{run.job_id}"  # one release per job: jobs may run side by side
    if engine == "kubernetes":
        import os

        from clara_wf import kube_engine
        from clara_wf.helm import Helm

        return kube_engine.run_workflow(
            helm or Helm(), run.project.chart_dir, release=release, namespace=namespace, kube_context=kube_context,
            set_string=run.set_string(), timeout=timeout, keep=False, on_event=on_event,
            ngc_key=os.environ.get("NGC_API_KEY"), stages=run.stages,
            trtis_release="trtis" if run.needs_triton else None, trtis_chart=run.project.trtis_chart_dir,
        )
    from clara_wf import local_engine

    return local_engine.run_workflow(run, timeout=timeout, on_event=on_event, release=release, helm=helm)
