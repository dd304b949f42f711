"""The engine protocol: every engine takes a frozen run plan and an event sink, returns the outcome.

``clara_wf.run.run_test`` builds the ``RunPlan`` (a checked ``WorkflowRun`` plus what the
caller asked for), picks the engine, and owns everything around the run that is the same
for every engine: dry run, image builds, the display's lifetime and the run record. An
engine only runs: it sends ``clara_wf.events`` objects to ``sink`` (``StageUpdate`` for
every stage change, ``TritonReady`` once it knows the Triton the stages use) and returns a
``JobOutcome``; on Ctrl-C it stops what it started, reports the stages it stopped as
``stopped`` and lets the exception through.

What an engine decides (e.g. the Triton URI) never goes back into the plan or the run:
it makes a new run with ``dataclasses.replace(plan.run, trtis_uri=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

from clara_wf.events import EventSink, JobOutcome
from clara_wf.workflow import DEFAULT_RELEASE, WorkflowRun

Outcome = JobOutcome
DEFAULT_NAMESPACE = "default"
DEFAULT_TIMEOUT_S = 1800.0
SANDBOXES = ("auto", "bwrap", "none")  # local engine: how stages see the pod's paths


@dataclass(frozen=True)
class RunPlan:
    """One run: the checked workflow run and the options given for it (engine-neutral)."""

    run: WorkflowRun
    release: str = DEFAULT_RELEASE
    namespace: str = DEFAULT_NAMESPACE
    kube_context: Optional[str] = None
    timeout: float = DEFAULT_TIMEOUT_S  # seconds the whole run may take
    keep: bool = False  # leave what the run installed in place (Kubernetes releases)
    sandbox: str = "auto"  # local engine: bwrap, none or auto
    build: bool = False  # build the stage images first (engines whose stages run from images)
    trtis_uri: Optional[str] = None  # a Triton given by the user: the engine neither starts nor installs one
    runtime: str = "auto"  # container engine and image builds: podman, docker or auto (whichever answers)
    base_image: str = "auto"  # image builds: BASE_IMAGE (auto, local, dockerfile or an image reference)
    # Runs (clara_wf/runs.py): this run's id; a rerun (--from/--only: a runs.Rerun) checked
    # by run_test; how many earlier runs the job folder keeps, or clean = delete them.
    # Engines that host the job folder call runs.prepare_job with these, then send RunStarted.
    run_id: str = ""
    rerun: Optional[Any] = None
    keep_runs: int = 3
    clean: bool = False
    # Stop a Triton the engine started only when the caller says so (after it has shown the
    # outcome); see JobOutcome.teardown.
    defer_teardown: bool = False


class Engine(Protocol):
    """What ``run_test`` needs from an engine. Register one with ``clara_wf.engines.register``."""

    name: str
    # Its stages run from container images (then `--build` builds them before the run).
    uses_images: bool

    def run(self, plan: RunPlan, sink: EventSink) -> Outcome: ...

    def planned_trtis_uri(self, plan: RunPlan) -> Optional[str]:
        """The ``trtisUri`` a dry run shows when no Triton is given (None: the run's own)."""
        ...
