"""``run.json``: what a run did, kept in the job's payload folder, the same for every engine.

``RunRecorder`` is an event sink in front of ``clara_wf.runs.RunRecord``: the record is
written (atomically) when the engine has prepared the job folder (``RunStarted``, status
``running``), at every stage change and Triton decision, and at the end. Engines that do
not prepare a job folder (Kubernetes) get their record from their first stage event.
The runner's lock or marker, when an engine passes it (``StageUpdate.runner``), gives
attempts, wait and run times; the stage's output files are hashed when it ends.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional

from clara_wf import runs
from clara_wf.events import FINAL_STATES, RUNNING, Event, JobOutcome, RunStarted, StageUpdate, TritonReady
from clara_wf.workflow import WorkflowRun

RECORD_NAME = runs.RECORD_NAME


class RunRecorder:
    """An event sink that keeps ``run.json`` up to date."""

    def __init__(self, run: WorkflowRun, engine: str, run_id: str = "", mode: Optional[Dict[str, Any]] = None):
        self.run = run
        self.engine = engine
        self.run_id = run_id or runs.new_run_id()
        self.mode = mode
        self.trtis_uri: str = run.trtis_uri
        self.stages: Dict[str, StageUpdate] = {}
        self.record_file: Optional[runs.RunRecord] = None
        self._started: Dict[str, float] = {}

    # -- events -------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._open(event.prepared)
        elif isinstance(event, StageUpdate):
            self._stage(event)
        elif isinstance(event, TritonReady):
            self.trtis_uri = event.uri
            if self.record_file is not None:
                self.record_file.set(trtis_uri=event.uri)

    def _open(self, prepared: Optional["runs.Prepared"]) -> runs.RunRecord:
        layout = prepared.layout if prepared is not None else None
        self.record_file = runs.RunRecord.start(
            job_dir=self.run.job_dir, run_id=self.run_id, workflow=self.run.workflow_id, job_id=self.run.job_id,
            job_name=self.run.job_name, engine=self.engine, stages=list(self.run.stages),
            chart_dir=self.run.project.chart_dir, layout=layout, mode=self.mode, trtis_uri=self.trtis_uri)
        if prepared is not None:
            for name, entry in prepared.reused.items():
                self.record_file.entry(name).update(
                    state=runs.STAGE_REUSED, status="reused", detail=f"outputs of run {self.mode and self.mode.get('reused_from')}",
                    outputs=entry.get("outputs") or [], log=None)
            if self.mode and self.mode.get("kind") == "only":
                ran = {self.mode.get("stage")} | set(prepared.reused)
                for name in self.run.stages:
                    if name not in ran:
                        self.record_file.entry(name).update(state=runs.STAGE_SKIPPED, detail="--only")
            for name, log in layout.stage_logs.items() if layout else ():
                if name in self.run.stages and name not in prepared.reused:
                    self.record_file.entry(name)["log"] = log
            self.record_file.save()
        return self.record_file

    def _stage(self, update: StageUpdate) -> None:
        record = self.record_file or self._open(None)
        now = time.time()
        if update.state == RUNNING:
            self._started.setdefault(update.stage, update.started or now)
        if update.started:
            self._started[update.stage] = update.started
        self.stages[update.stage] = update
        extra: Dict[str, Any] = {}
        start = self._started.get(update.stage)
        if start:
            extra["start"] = runs.iso(start)
        final = update.state in FINAL_STATES
        if final:
            end = update.ended or now
            extra["end"] = runs.iso(end)
            if start and update.runner is None and update.state != "stopped":
                extra["run_s"] = round(end - start, 6)
        if update.log and not record.entry(update.stage).get("log"):
            extra["log"] = runs.relative_to_job(self.run.job_dir, Path(update.log))
        if update.status:
            extra["status"] = update.status
        record.stage_from_runner(update.stage, update.runner if final else None, update.state.value if hasattr(update.state, "value") else str(update.state),
                                 update.exit_code, update.detail, hash_outputs=final and update.state != "stopped", **extra)

    # -- the end ------------------------------------------------------------------------
    def take(self, outcome: JobOutcome) -> None:
        """The engine's final word on each stage (its outcome) over what the events said."""
        for update in outcome.stages.values():
            if update != self.stages.get(update.stage):
                self._stage(update)
        record = self.record_file or self._open(None)
        if outcome.timings:
            record.data["timings"] = outcome.timings  # seconds per phase (render, Triton start, ...)
        status = runs.SUCCEEDED if outcome.succeeded else (runs.TIMED_OUT if outcome.timed_out else runs.FAILED)
        record.finish(status, outcome.message)

    def fail(self, error: BaseException) -> None:
        """The run ended with an exception (Ctrl-C, a Triton that did not start)."""
        if self.record_file is None:
            return
        interrupted = isinstance(error, KeyboardInterrupt)
        message = "interrupted" if interrupted else (str(error) or type(error).__name__)
        for entry in self.record_file.data["stages"]:
            if entry["state"] in (runs.STAGE_WAITING, runs.STAGE_RUNNING):
                entry["state"] = "stopped"
        self.record_file.finish(runs.INTERRUPTED if interrupted else runs.FAILED, message)

    @property
    def any_stage(self) -> bool:
        return self.record_file is not None

    def record(self) -> Dict[str, Any]:
        return self.record_file.data if self.record_file is not None else {}

    @property
    def path(self) -> Optional[Path]:
        return self.record_file.path if self.record_file is not None else None
