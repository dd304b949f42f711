"""Progress events shared by the run engines (kubernetes and local) and the display.

Engines call ``on_event(event)`` with one of these plain dataclasses; the CLI renders
them. The kubernetes engine calls ``on_event`` only from the thread that called it
(log lines gathered by helper threads are handed over through a queue), so a display
does not need locks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Dict, Optional, Union


class StageState(str, Enum):
    """Every state an engine gives a stage; the value is what ``run.json`` and the display show."""

    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"  # still waiting or running when the run was interrupted (Ctrl-C, SIGTERM)

    # Format and print as the plain value ("done"), as the strings these replace did.
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


WAITING = StageState.WAITING
RUNNING = StageState.RUNNING
DONE = StageState.DONE
FAILED = StageState.FAILED
STOPPED = StageState.STOPPED
STAGE_STATES = tuple(StageState)
FINAL_STATES = (DONE, FAILED, STOPPED)


@dataclass(frozen=True)
class StageUpdate:
    """A stage (one container of the workflow pod) changed state."""

    stage: str
    state: StageState
    detail: str = ""
    exit_code: Optional[int] = None
    # Known once the stage ended (what the run record keeps): the runner's status
    # (e.g. "upstream-failed"), start and end (epoch seconds) and the stage's log file.
    status: str = ""
    started: Optional[float] = None
    ended: Optional[float] = None
    log: Optional[str] = None
    # The stage runner's lock or failure marker, when the engine can read it (attempts,
    # wait time: docs/lock-protocol.md); the run record takes what it says.
    runner: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class LogLine:
    """One line a stage wrote to stdout/stderr (without the trailing newline)."""

    stage: str
    text: str


@dataclass(frozen=True)
class Info:
    """A progress message that belongs to no stage (installing Triton, watch restarted...)."""

    text: str


@dataclass(frozen=True)
class TritonReady:
    """The engine decided which Triton the stages use (``trtisUri``); the run record keeps it."""

    uri: str


@dataclass(frozen=True)
class RunStarted:
    """The engine gave the run its job folder (``clara_wf.runs.prepare_job``): the previous
    run's files moved away, reused outputs restored. ``prepared`` is a ``runs.Prepared``."""

    prepared: Any


Event = Union[StageUpdate, LogLine, Info, TritonReady, RunStarted]
EventSink = Callable[[Event], None]


def ignore(event: Event) -> None:
    """An ``on_event`` that drops everything."""


@dataclass
class JobOutcome:
    """How a workflow run ended; the same shape from every engine.

    ``stages`` maps each stage to its last ``StageUpdate``; ``failed_stage`` is the first
    stage that failed (or whose image could not be pulled); ``message`` is one line for
    the user.
    """

    succeeded: bool
    stages: Dict[str, StageUpdate]
    failed_stage: Optional[str] = None
    message: str = ""
    timed_out: bool = False
    job_name: str = ""
    timings: dict = field(default_factory=dict)  # seconds per phase, for benchmarks
    # What is left to do once the outcome is shown (stopping a Triton the run started), when
    # the plan asked for it to be deferred (RunPlan.defer_teardown); the caller must call it.
    teardown: Optional[Callable[[], None]] = None
