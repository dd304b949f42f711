"""`clara-wf test` as a plain function: check a run, run it on an engine, keep its record.

``run_test`` is what every caller uses (the CLI's ``test``, the DICOM adapter for each
study it receives): it checks the input, builds the engine-neutral ``RunPlan``, and around
the engine's ``run`` owns what is the same for every engine — the dry run, image builds,
the one-run-per-job lock, the display's lifetime and the run record (``run.json``). It
never prints: progress goes to ``note``, stage events to the display the caller makes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Protocol, Sequence

from clara_wf import engines
from clara_wf.engines.base import DEFAULT_NAMESPACE, DEFAULT_TIMEOUT_S, SANDBOXES, RunPlan
from clara_wf.errors import InputError
from clara_wf.events import Event, JobOutcome
from clara_wf.project import Project
from clara_wf.workflow import (
    DEFAULT_JOB,
    DEFAULT_JOB_NAME,
    DEFAULT_RELEASE,
    DEFAULT_TRTIS_URI,
    DEFAULT_WORKFLOW,
    WorkflowRun,
)

if TYPE_CHECKING:
    from clara_wf.rendering import DryRun



class Display(Protocol):
    """A live view of the run: gets every event, is closed when the run ends (also on Ctrl-C)."""

    def __call__(self, event: Event) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class TestResult:
    """What ``run_test`` did. ``run`` carries the engine's decisions (its ``trtis_uri``)."""

    __test__ = False  # not a pytest test class

    run: WorkflowRun
    engine: str = ""
    engine_reason: str = ""
    outcome: Optional[JobOutcome] = None
    record: Optional[Dict[str, Any]] = None
    record_path: Optional[Path] = None
    dry_run: Optional["DryRun"] = None  # set by a dry run: the helm command and the manifests

    @property
    def succeeded(self) -> bool:
        return self.outcome is not None and self.outcome.succeeded


def _no_note(message: str) -> None:
    """The default ``note``: progress goes nowhere."""


def run_test(
    project: Project,
    workflow_id: str = DEFAULT_WORKFLOW,
    job_id: str = DEFAULT_JOB,
    *,
    engine: str = engines.AUTO,
    dry_run: bool = False,
    release: str = DEFAULT_RELEASE,
    namespace: str = DEFAULT_NAMESPACE,
    kube_context: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    keep: bool = False,
    build: bool = False,
    sandbox: str = "auto",
    trtis_uri: Optional[str] = None,
    runtime: str = "auto",
    base_image: str = "auto",
    job_name: str = DEFAULT_JOB_NAME,
    payloads_root: Optional[Path] = None,
    overrides: Optional[Mapping[str, str]] = None,
    display: Optional[Callable[[Sequence[str]], Display]] = None,
    note: Callable[[str], None] = _no_note,
    from_stage: Optional[str] = None,
    only_stage: Optional[str] = None,
    keep_runs: int = 3,
    clean: bool = False,
    defer_teardown: bool = False,
) -> TestResult:
    """Run ``workflow_id`` on job ``job_id`` (its payload: ``payloads_root/JOB``, by default
    the project's test-data/). ``overrides`` sets run-time values such as
    ``dicomAdapter.input``. Raises InputError before anything runs when the input is wrong;
    a failed workflow is a result (``succeeded`` False), not an exception."""
    from clara_wf import workflow as wf

    wf.check_release_name(release)
    wf.check_namespace(namespace)
    wf.check_seconds(timeout)
    if trtis_uri is not None:
        wf.check_trtis_uri(trtis_uri)
    if sandbox not in SANDBOXES:
        raise InputError(f"unknown sandbox {sandbox!r}: choose one of {', '.join(SANDBOXES)}")
    from clara_wf.containers.runtime import RUNTIMES

    if runtime not in RUNTIMES:
        raise InputError(f"unknown container runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if from_stage and only_stage:
        raise InputError("--from and --only exclude each other: --from STAGE reruns STAGE and what follows it, "
                         "--only STAGE reruns STAGE alone")
    if clean and (from_stage or only_stage):
        raise InputError("--clean deletes the earlier runs that --from/--only reuse: use one or the other")
    if keep_runs < 0:
        raise InputError(f"--keep-runs must be 0 or more, not {keep_runs}")
    run = wf.plan_run(project, workflow_id, job_id, job_name=job_name, trtis_uri=trtis_uri or DEFAULT_TRTIS_URI,
                      payloads_root=payloads_root, overrides=overrides)
    from clara_wf import runs

    plan = RunPlan(run=run, release=release, namespace=namespace, kube_context=kube_context, timeout=timeout,
                   keep=keep, sandbox=sandbox, build=build, trtis_uri=trtis_uri, runtime=runtime, base_image=base_image,
                   run_id=runs.new_run_id(), keep_runs=keep_runs, clean=clean, defer_teardown=defer_teardown)
    if from_stage or only_stage:
        # Checked now (the stage exists) and again under the job's lock (the outputs).
        _rerun(plan, from_stage, only_stage)
    if dry_run:
        return _dry_run(plan, engine)

    chosen, why = engines.choose_engine(engine, kube_context)
    note(f"engine: {chosen} ({why})")
    runner = engines.get(chosen)
    if build and runner.uses_images:
        from clara_wf.containers.build import build_before_run

        # The container engine runs the images here: no runtime is an error. For a cluster the
        # images may be built elsewhere: no runtime is a note.
        build_before_run(run, runtime=runtime, base=base_image, progress=note, required=chosen == "container")
    return _run(plan, runner, why, display, from_stage, only_stage)


def _rerun(plan: RunPlan, from_stage: Optional[str], only_stage: Optional[str]) -> RunPlan:
    """The plan with its rerun: which stages run, whose outputs are reused (InputError when
    the last successful run's outputs are missing or changed)."""
    from clara_wf import graph, runs

    run = plan.run
    dag = graph.build_graph(run.workflow_id, dict(run.definition), dict(run.values))
    edges = [(u, d) for u, d, _ in dag.edges if u in run.stages]
    rerun = runs.plan_rerun(run.job_dir, run.workflow_id, list(run.stages), edges,
                            from_stage=from_stage, only_stage=only_stage)
    return dataclasses.replace(plan, rerun=rerun)


def _dry_run(plan: RunPlan, engine: str) -> TestResult:
    from clara_wf import rendering

    # `auto` shows what the Kubernetes engine would install: a dry run does not probe clusters.
    planned = engines.get("kubernetes" if engine == engines.AUTO else engine).planned_trtis_uri(plan)
    run = dataclasses.replace(plan.run, trtis_uri=planned) if planned else plan.run
    shown = rendering.dry_run(run, release=plan.release, namespace=plan.namespace, timeout=plan.timeout,
                              kube_context=plan.kube_context)
    return TestResult(run=run, dry_run=shown)


def _run(plan: RunPlan, runner: engines.Engine, why: str, display: Optional[Callable[[Sequence[str]], Display]],
         from_stage: Optional[str] = None, only_stage: Optional[str] = None) -> TestResult:
    from clara_wf import run_record
    from clara_wf.job_lock import job_lock

    run = plan.run
    with job_lock(run.project.state_dir, run.job_id):
        if from_stage or only_stage:
            plan = _rerun(plan, from_stage, only_stage)  # under the lock: no other run moves the files
        mode = plan.rerun.mode() if plan.rerun is not None else None
        recorder = run_record.RunRecorder(run, runner.name, run_id=plan.run_id, mode=mode)
        shown = display(run.stages) if display is not None else None

        def sink(event: Event) -> None:
            recorder(event)  # first: the record must not depend on a terminal that went away
            if shown is not None:
                shown(event)

        try:
            try:
                outcome = runner.run(plan, sink)
            finally:
                if shown is not None:
                    shown.close()
        except BaseException as error:
            recorder.fail(error)
            raise
        recorder.take(outcome)
        record = recorder.record()
        path = recorder.path
    return TestResult(run=dataclasses.replace(run, trtis_uri=recorder.trtis_uri), engine=runner.name,
                      engine_reason=why, outcome=outcome, record=record, record_path=path)
