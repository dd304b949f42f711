"""``run.json``: what a run did, kept in the job's payload folder, the same for every engine.

The record is built from the events the engine sends (``RunRecorder`` is a sink): the
last ``StageUpdate`` of each stage and the ``TritonReady`` URI. A run that stopped before
any stage started (bad input, no Triton) leaves no record.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

from clara_wf.events import FINAL_STATES, RUNNING, Event, JobOutcome, StageState, StageUpdate, TritonReady
from clara_wf.runner import protocol
from clara_wf.workflow import WorkflowRun

RECORD_NAME = "run.json"


class RunRecorder:
    """An event sink that remembers what the record needs."""

    def __init__(self, run: WorkflowRun, engine: str):
        self.run = run
        self.engine = engine
        self.trtis_uri = run.trtis_uri
        self.stages: Dict[str, StageUpdate] = {}
        self._started: Dict[str, float] = {}
        self._ended: Dict[str, float] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, StageUpdate):
            self._stage(event)
        elif isinstance(event, TritonReady):
            self.trtis_uri = event.uri

    def _stage(self, update: StageUpdate) -> None:
        # Engines that know when a stage started or ended say so; else the time it was seen.
        now = time.time()
        if update.state == RUNNING:
            self._started.setdefault(update.stage, update.started or now)
        if update.started:
            self._started[update.stage] = update.started
        if update.state in FINAL_STATES:
            self._ended[update.stage] = update.ended or self._ended.get(update.stage) or now
        self.stages[update.stage] = update

    def take(self, outcome: JobOutcome) -> None:
        """The engine's final word on each stage (its outcome) over what the events said."""
        for update in outcome.stages.values():
            if update != self.stages.get(update.stage):
                self._stage(update)

    @property
    def any_stage(self) -> bool:
        return bool(self.stages)

    def record(self, *, interrupted: bool = False) -> Dict[str, Any]:
        order = [s for s in self.run.stages if s in self.stages] + [s for s in self.stages if s not in self.run.stages]
        return {
            "workflow": self.run.workflow_id,
            "job_id": self.run.job_id,
            "job_name": self.run.job_name,
            "engine": self.engine,
            "interrupted": interrupted,
            "trtis_uri": self.trtis_uri,
            "stages": [self._stage_record(self.stages[name]) for name in order],
        }

    def _stage_record(self, update: StageUpdate) -> Dict[str, Any]:
        start = self._started.get(update.stage)
        end = self._ended.get(update.stage)
        return {
            "stage": update.stage,
            "state": StageState(update.state).value,
            "status": update.status,
            "start": protocol.iso_time(start) if start else None,
            "end": protocol.iso_time(end) if end else None,
            "exit_code": update.exit_code,
            "detail": update.detail,
            "log": update.log,
        }


def write(run: WorkflowRun, record: Dict[str, Any], folder: Optional[Path] = None) -> Path:
    """Write the record into the job's folder, all at once (a reader never sees half of it)."""
    from clara_wf import fsio

    path = (folder or run.job_dir) / RECORD_NAME
    fsio.atomic_write(path, json.dumps(record, indent=2) + "\n")
    return path
