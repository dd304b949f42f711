"""Progress events shared by the run engines (kubernetes and local) and the display.

Engines call ``on_event(event)`` with one of these plain dataclasses; the CLI renders
them. The kubernetes engine calls ``on_event`` only from the thread that called it
(log lines gathered by helper threads are handed over through a queue), so a display
does not need locks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Union

WAITING = "waiting"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
STAGE_STATES = (WAITING, RUNNING, DONE, FAILED)


@dataclass(frozen=True)
class StageUpdate:
    """A stage (one container of the workflow pod) changed state."""

    stage: str
    state: str  # "waiting" | "running" | "done" | "failed"
    detail: str = ""
    exit_code: Optional[int] = None


@dataclass(frozen=True)
class LogLine:
    """One line a stage wrote to stdout/stderr (without the trailing newline)."""

    stage: str
    text: str


@dataclass(frozen=True)
class Info:
    """A progress message that belongs to no stage (installing Triton, watch restarted...)."""

    text: str


Event = Union[StageUpdate, LogLine, Info]
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
    stages: dict
    failed_stage: Optional[str] = None
    message: str = ""
    timed_out: bool = False
    job_name: str = ""
    timings: dict = field(default_factory=dict)  # seconds per phase, for benchmarks
