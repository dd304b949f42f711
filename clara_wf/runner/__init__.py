"""The stage runner: sequences a run's stage containers through lock files.

All stage containers of a run start at once in one pod; in each, the runner waits for
the locks named in NVIDIA_CLARA_WAITNAME (and, outside RUNSIMPLE, the platform's
INPUTLOCK), runs the stage's program, then writes NVIDIA_CLARA_LOCKNAME or a failure
marker. The protocol, variables and exit codes are in docs/lock-protocol.md.

Standard library only and Python 3.8+, so that ``clara_wf/__init__.py``,
``clara_wf/payload.py`` and this package can be copied or pip-installed into any stage
image. Entry points: ``python -m clara_wf.runner -- PROGRAM ARGS...`` and
``clara-wf-stage -- PROGRAM ARGS...``; in-process: :class:`Driver`.
"""

from clara_wf.runner.config import ConfigError, StageConfig, WaitTarget, load_config
from clara_wf.runner.driver import Driver
from clara_wf.runner.protocol import (
    EXIT_CONFIG,
    EXIT_LOCK_WRITE,
    EXIT_LOCKDIR_GONE,
    EXIT_OK,
    EXIT_RUN_TIMEOUT,
    EXIT_SIGNAL_BASE,
    EXIT_START_FAILED,
    EXIT_TIMEOUT,
    EXIT_UPSTREAM_FAILED,
    FAILED_SUFFIX,
    POLL_ENV,
    PROTOCOL_VERSION,
    RUNNER_EXIT_CODES,
    failure_marker_name,
    read_record,
)
from clara_wf.runner.stage import main, run_stage

__all__ = [
    "main",
    "run_stage",
    "Driver",
    "ConfigError",
    "StageConfig",
    "WaitTarget",
    "load_config",
    "read_record",
    "failure_marker_name",
    "EXIT_OK",
    "EXIT_CONFIG",
    "EXIT_TIMEOUT",
    "EXIT_UPSTREAM_FAILED",
    "EXIT_START_FAILED",
    "EXIT_LOCK_WRITE",
    "EXIT_RUN_TIMEOUT",
    "EXIT_LOCKDIR_GONE",
    "EXIT_SIGNAL_BASE",
    "FAILED_SUFFIX",
    "POLL_ENV",
    "PROTOCOL_VERSION",
    "RUNNER_EXIT_CODES",
]
