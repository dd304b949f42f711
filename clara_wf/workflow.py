"""`clara-wf test`: check a workflow and a job before anything runs, and the values to run them with.

Everything a run needs is checked here, before helm or any engine starts: the job id is a
UUID, the workflow exists, each of its stages has a template folder and values, and
``test-data/JOB`` exists. The run-time values are the ones the original passes to
``helm install --set-string`` (seed 003), so the local and the Kubernetes engines render
exactly the same chart.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from clara_wf import charts
from clara_wf.errors import InputError
from clara_wf.project import Project

DEFAULT_WORKFLOW = "ai-only"
DEFAULT_JOB = "00000000-0000-0000-0000-000000000000"
DEFAULT_JOB_NAME = "Test Job"
DEFAULT_RELEASE = "test-wf"
DEFAULT_TRTIS_URI = "localhost:8000"
ENGINES = ("auto", "local", "kubernetes")

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_RELEASE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_job_id(job_id: str) -> None:
    if not _UUID.match(job_id):
        raise InputError(f"job id {job_id!r} is not a UUID (e.g. {DEFAULT_JOB}); Clara names payloads by job UUID")


def check_release_name(release: str) -> None:
    if len(release) > 53 or not _RELEASE.match(release):
        raise InputError(
            f"invalid release name {release!r}: lower-case letters, digits and '-', at most 53 characters"
        )


@dataclass
class WorkflowRun:
    """A checked workflow run: what to render and with which values."""

    project: Project
    workflow_id: str
    job_id: str
    job_name: str
    stages: List[str]
    job_dir: Path
    trtis_uri: str
    values: Dict[str, dict] = field(default_factory=dict)  # stages.<name> values, as parsed

    @property
    def payloads_host_path(self) -> Path:
        return self.project.test_data_dir.resolve()

    def set_string(self) -> Dict[str, str]:
        """The run-time values, exactly as the original ``clara-wf test`` passes them."""
        return {
            "runSimple": "TRUE",
            "workflow.id": self.workflow_id,
            "workflow.payloads.hostPath": str(self.payloads_host_path),
            "job.id": self.job_id,
            "job.name": self.job_name,
            "trtisUri": self.trtis_uri,
            "dicomAdapter.input": "",
            "dicomAdapter.output": "",
        }


def workflow_ids(data) -> List[str]:
    workflows = data.get("workflows") or {}
    return sorted(str(k) for k in workflows) if isinstance(workflows, dict) else []


def plan_run(
    project: Project,
    workflow_id: str = DEFAULT_WORKFLOW,
    job_id: str = DEFAULT_JOB,
    *,
    job_name: str = DEFAULT_JOB_NAME,
    trtis_uri: str = DEFAULT_TRTIS_URI,
    need_test_data: bool = True,
) -> WorkflowRun:
    check_job_id(job_id)
    data = charts.read_values(project.values_file)
    workflows = data.get("workflows") or {}
    if not isinstance(workflows, dict) or workflow_id not in workflows:
        known = ", ".join(workflow_ids(data)) or "none"
        raise InputError(f"no workflow {workflow_id!r} in {project.values_file} (workflows: {known})")
    definition = workflows[workflow_id]
    stages = definition.get("stages") if isinstance(definition, dict) else None
    if not isinstance(stages, list) or not stages:
        raise InputError(f"workflow {workflow_id!r} has no stages list in {project.values_file}")
    stages = [str(s) for s in stages]

    folders = set(charts.list_stages(project))
    stage_values = data.get("stages") or {}
    for name in stages:
        if name not in folders:
            raise InputError(
                f"workflow {workflow_id!r} uses stage {name!r}, which has no templates "
                f"({project.stages_dir / name} is missing): `clara-wf cs {name}` scaffolds it"
            )
        if not isinstance(stage_values, dict) or name not in stage_values:
            raise InputError(
                f"workflow {workflow_id!r} uses stage {name!r}, which has no values under stages: "
                f"in {project.values_file}"
            )

    job_dir = project.test_data_dir / job_id
    if need_test_data and not job_dir.is_dir():
        raise InputError(
            f"no test data for job {job_id}: {job_dir} is missing "
            f"(put the first stage's input under {job_dir / stages[0] / 'input'})"
        )
    return WorkflowRun(
        project=project,
        workflow_id=workflow_id,
        job_id=job_id,
        job_name=job_name,
        stages=stages,
        job_dir=job_dir,
        trtis_uri=trtis_uri,
        values={name: dict(stage_values[name]) for name in stages},
    )


def kubeconfig_present() -> Tuple[bool, str]:
    """Cheap first look for ``--engine auto``: no kubeconfig means no cluster to try."""
    paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if not paths:
        paths = [str(Path.home() / ".kube" / "config")]
    existing = [p for p in paths if Path(p).is_file()]
    if not existing:
        return False, f"no kubeconfig ({', '.join(paths)})"
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True, "running inside a cluster"
    return True, f"kubeconfig {existing[0]}"


def choose_engine(requested: str, kube_context: Optional[str] = None) -> Tuple[str, str]:
    """Resolve ``--engine``: (engine, why). ``auto`` is Kubernetes when a context answers, else local."""
    if requested not in ENGINES:
        raise InputError(f"unknown engine {requested!r}: choose one of {', '.join(ENGINES)}")
    if requested != "auto":
        return requested, "requested"
    present, why = kubeconfig_present()
    if not present:
        return "local", why
    from clara_wf import kube

    answers, reason = kube.probe(kube_context)
    return ("kubernetes", reason) if answers else ("local", f"{why} does not answer: {reason}")
