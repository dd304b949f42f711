"""`clara-wf test`: check a workflow and a job before anything runs, and the values to run them with.

Everything a run needs is checked here, before helm or any engine starts: the job id is a
UUID, the workflow exists, each of its stages has a template folder and values, and
``test-data/JOB`` exists. The run-time values are the ones the original passes to
``helm install --set-string`` (seed 003), so the local and the Kubernetes engines render
exactly the same chart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from clara_wf import charts, dag, triton
from clara_wf.errors import InputError
from clara_wf.project import Project

DEFAULT_WORKFLOW = "ai-only"
DEFAULT_JOB = "00000000-0000-0000-0000-000000000000"
DEFAULT_JOB_NAME = "Test Job"
DEFAULT_RELEASE = "test-wf"
DEFAULT_TRTIS_URI = "localhost:8000"

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def check_job_id(job_id: str) -> None:
    if not _UUID.fullmatch(job_id):
        raise InputError(f"job id {job_id!r} is not a UUID (e.g. {DEFAULT_JOB}); Clara names payloads by job UUID")


def check_release_name(release: str) -> None:
    if not charts.is_dns_label(release, max_length=53):
        raise InputError(
            f"invalid release name {release!r}: lower-case letters, digits and '-', at most 53 characters"
        )


def check_seconds(value: float, option: str = "--timeout") -> float:
    """A time limit: a finite number of seconds > 0 (nan and inf would mean no limit at all)."""
    import math

    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{option} must be a number of seconds > 0, not {value:g}")
    return value


def check_namespace(namespace: str) -> str:
    """A Kubernetes namespace is a DNS-1123 label."""
    if not charts.is_dns_label(namespace):
        raise InputError(f"invalid namespace {namespace!r}: lower-case letters, digits and '-', "
                         "starting and ending with a letter or digit, at most 63 characters")
    return namespace


_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
                   r"|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]")


def check_trtis_uri(uri: str) -> str:
    """Triton's HTTP endpoint as ``host:port`` (``http://`` allowed), as NVIDIA_CLARA_TRTISURI takes it."""
    rest = uri[len("http://"):] if uri.startswith("http://") else uri
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not _HOST.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--trtis-uri {uri!r} is not host:port (e.g. localhost:8000 or trtis.default:8000)")
    return uri


def workflow_set_string(
    *,
    workflow_id: str,
    job_id: str,
    payloads_host_path: Path,
    trtis_uri: str,
    job_name: str = DEFAULT_JOB_NAME,
    run_simple: bool = True,
) -> Dict[str, str]:
    """The run-time values of the seed's ``helm install --set-string`` call, in its order.

    Values are plain strings; escaping for ``--set-string`` is helm.py's job.
    """
    return {
        "runSimple": "TRUE" if run_simple else "FALSE",
        "workflow.id": workflow_id,
        "workflow.payloads.hostPath": str(Path(payloads_host_path).absolute()),
        "job.id": job_id,
        "job.name": job_name,
        "trtisUri": trtis_uri,
        "dicomAdapter.input": "",
        "dicomAdapter.output": "",
    }


# Run-time values a caller may set per run (the DICOM adapter sets where its study is).
# workflow.payloads.hostPath: the DICOM adapter in a pod sees the payloads at another path than the nodes do.
OVERRIDABLE_VALUES = ("dicomAdapter.input", "dicomAdapter.output", "job.name", "runSimple", "workflow.payloads.hostPath")


@dataclass(frozen=True)
class WorkflowRun:
    """A checked workflow run: what to render and with which values.

    Frozen: what an engine decides (the Triton URI) makes a new run with
    ``dataclasses.replace(run, trtis_uri=...)``; nothing assigns onto a run.
    """

    project: Project
    workflow_id: str
    job_id: str
    job_name: str
    stages: Tuple[str, ...]
    payloads_root: Path  # the folder holding JOB/ (test-data/ for `clara-wf test`)
    trtis_uri: str
    values: Mapping[str, dict] = field(default_factory=dict)  # stages.<name> values, as parsed
    definition: Mapping[str, Any] = field(default_factory=dict)  # workflows.<id>, as parsed
    overrides: Mapping[str, str] = field(default_factory=dict)  # OVERRIDABLE_VALUES set for this run

    @property
    def job_dir(self) -> Path:
        return self.payloads_root / self.job_id

    @property
    def needs_triton(self) -> bool:
        """A stage lists the trtis service (stages.<name>.services)."""
        return any(triton.SERVICE in (self.values.get(s, {}).get("services") or []) for s in self.stages)

    def output_folders(self) -> List[Path]:
        """Where the workflow's results land: the outputs nothing else reads (DAG form), or
        the last stage's output folder (seed form)."""
        io = self.definition.get("io") or {}
        if io:
            read = {(src.get("from"), src.get("name")) for spec in io.values() if isinstance(spec, dict)
                    for src in (spec.get("inputs") or []) if isinstance(src, dict) and src.get("from")}
            read_any = {origin for origin, name in read if not name}
            folders = []
            for stage in self.stages:
                for out in ((io.get(stage) or {}).get("outputs") or []):
                    if (stage, out.get("name")) not in read and stage not in read_any:
                        folders.append(self.job_dir / stage / str(out.get("name")))
            if folders:
                return folders
        io_folders = self.definition.get("ioFolders") or []
        last = io_folders[-1] if len(io_folders) == len(self.stages) + 1 else f"{self.stages[-1]}/output"
        last = self.overrides.get("dicomAdapter.output") or last  # the chart mounts it as the last output
        return [self.job_dir / str(last)]

    @property
    def payloads_host_path(self) -> Path:
        return self.payloads_root.resolve()

    def set_string(self) -> Dict[str, str]:
        """The run-time values, exactly as the original ``clara-wf test`` passes them."""
        values = workflow_set_string(workflow_id=self.workflow_id, job_id=self.job_id,
                                     payloads_host_path=self.payloads_host_path, trtis_uri=self.trtis_uri,
                                     job_name=self.job_name)
        values.update(self.overrides)
        return values


def validate_dag(workflow_id: str, definition: dict, lock_names: Dict[str, str]) -> Dict[str, List[str]]:
    """Check a workflow's graph before helm runs; the upstream stages of each stage.

    The same checks as the chart's ``clara-workflow.validateGraph`` (which guards a
    ``helm install`` made without clara-wf), with the same messages: stages named twice,
    io naming a stage outside the workflow, outputs without a name or named twice, inputs
    from an unknown stage or of an output no stage writes, relative paths, waits for a
    lock no stage writes, and cycles. ``lock_names`` maps each stage to its lockName.
    """
    stages = [str(s) for s in definition.get("stages") or []]
    wf = f"workflow {workflow_id!r}"
    seen = set()
    for stage in stages:
        if stage in seen:
            raise InputError(f"{wf} names stage {stage!r} twice")
        seen.add(stage)
    io = definition.get("io") or {}
    if not isinstance(io, dict):
        raise InputError(f"{wf}: io must map stage names to their inputs and outputs")
    for stage, spec in io.items():
        if stage not in seen:
            raise InputError(f"{wf}: io names stage {stage!r}, which is not in its stages")
        if not isinstance(spec, dict):
            raise InputError(f"{wf}: io.{stage} must be a mapping with inputs and outputs lists")
        for key in ("inputs", "outputs"):
            entries = spec.get(key) or []
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise InputError(f"{wf}: io.{stage}.{key} must be a list of mappings (path, name, from)")
            for entry in entries:
                for field_name in ("from", "name", "path"):
                    if field_name in entry and not isinstance(entry[field_name], (str, type(None))):
                        raise InputError(f"{wf}: io.{stage}.{key}: {field_name} must be a string")
    outputs: Dict[str, List[str]] = {}
    for stage in stages:
        names: List[str] = []
        for output in (io.get(stage) or {}).get("outputs") or []:
            name = output.get("name")
            if not name:
                raise InputError(f"{wf}: an output of stage {stage!r} has no name")
            if name in names:
                raise InputError(f"{wf}: stage {stage!r} has two outputs named {name!r}")
            if not str(output.get("path", "")).startswith("/"):
                raise InputError(f"{wf}: output {name!r} of stage {stage!r} needs an absolute path")
            names.append(name)
        outputs[stage] = names
    owner = {lock: stage for stage, lock in lock_names.items() if stage in seen}  # as dag.lock_owners
    waits = definition.get("waitLocks") or []
    upstream: Dict[str, List[str]] = {}
    for index, stage in enumerate(stages):
        ups: List[str] = []
        paths = set()
        for source in (io.get(stage) or {}).get("inputs") or []:
            path = str(source.get("path", ""))
            if not path.startswith("/"):
                raise InputError(f"{wf}: an input of stage {stage!r} needs an absolute path")
            if path in paths:
                raise InputError(f"{wf}: stage {stage!r} mounts two inputs at {path}")
            paths.add(path)
            origin = source.get("from")
            if not origin:
                continue
            if origin not in seen:
                raise InputError(f"{wf}: stage {stage!r} reads from {origin!r}, which is not a stage of the workflow")
            name = source.get("name")
            if name and name not in outputs[origin]:
                raise InputError(f"{wf}: stage {stage!r} reads {origin}/{name}, an output that no stage writes")
            if not name and len(outputs[origin]) != 1:
                raise InputError(f"{wf}: stage {stage!r} reads from {origin!r} without naming which of its "
                                 f"{len(outputs[origin])} outputs")
            ups.append(origin)
        if index < len(waits):
            for lock in str(waits[index] or "").split(","):
                lock = lock.strip()
                if not lock:
                    continue
                if lock not in owner:
                    raise InputError(f"{wf}: stage {stage!r} waits for {lock}, which no stage of the workflow writes")
                ups.append(owner[lock])
        if stage in ups:
            raise InputError(f"{wf}: stage {stage!r} waits for itself")
        upstream[stage] = list(dict.fromkeys(ups))
    _, stuck = dag.order(stages, upstream)
    if stuck:
        raise InputError(f"{wf} has a cycle among stages {', '.join(stuck)}")
    return upstream


def plan_run(
    project: Project,
    workflow_id: str = DEFAULT_WORKFLOW,
    job_id: str = DEFAULT_JOB,
    *,
    job_name: str = DEFAULT_JOB_NAME,
    trtis_uri: str = DEFAULT_TRTIS_URI,
    need_test_data: bool = True,
    payloads_root: Optional[Path] = None,
    overrides: Optional[Mapping[str, str]] = None,
) -> WorkflowRun:
    """Check a run of ``workflow_id`` on job ``job_id`` before anything starts.

    ``payloads_root`` holds the job's folder (default: the project's test-data/);
    ``overrides`` sets run-time values of OVERRIDABLE_VALUES (e.g. the DICOM adapter's
    ``dicomAdapter.input``).
    """
    check_job_id(job_id)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(OVERRIDABLE_VALUES))
    if unknown:
        raise InputError(f"cannot set run-time value(s) {', '.join(unknown)}: only {', '.join(OVERRIDABLE_VALUES)}")
    root = Path(payloads_root) if payloads_root is not None else project.test_data_dir
    data = charts.read_values(project.values_file)
    definition = dag.find_workflow(data, workflow_id, project.values_file)
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
        if not isinstance(stage_values[name], dict):
            raise InputError(f"stages.{name} in {project.values_file} must be a mapping of the stage's values")

    validate_dag(workflow_id, definition,
                 {name: dag.lock_name(name, stage_values[name]) for name in stages})

    job_dir = root / job_id
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
        stages=tuple(stages),
        payloads_root=root,
        trtis_uri=trtis_uri,
        values={name: dict(stage_values[name]) for name in stages},
        definition=dict(definition),
        overrides=overrides,
    )
