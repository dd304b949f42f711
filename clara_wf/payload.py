"""``clara_payload``: the operator's input and output folders, as Clara's pipeline driver
gives them (seed 000, section 11.2.4.1).

    from clara_wf.payload import clara_payload
    for entry in clara_payload.input_entries:
        print(entry.name, entry.path)   # "payload" /input, "up-op/out" /input1, ...

Entries come from NVIDIA_CLARA_INPUTPATHS / NVIDIA_CLARA_OUTPUTPATHS
(``name:path;name:path``) and, when a variable is unset or empty, from clara-wf's chart
variables NVIDIA_CLARA_APPDIR + NVIDIA_CLARA_INPUTS / NVIDIA_CLARA_OUTPUTS. The values are
read when asked for, so a malformed one fails where it is used, with the variable named.
Standard library only, Python 3.8+: this module goes into stage images.

``python -m clara_wf.payload SCRIPT [ARGS...]`` runs SCRIPT with ``clara_payload`` already
a global, as Clara's pipeline driver does (``python -m nvidia_clara_pipeline_driver.app
SCRIPT``), so an ODK operator that uses the global without importing it runs unchanged.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, List, Mapping, NamedTuple, Optional

INPUTPATHS = "NVIDIA_CLARA_INPUTPATHS"
OUTPUTPATHS = "NVIDIA_CLARA_OUTPUTPATHS"
APPDIR = "NVIDIA_CLARA_APPDIR"
INPUTS = "NVIDIA_CLARA_INPUTS"
OUTPUTS = "NVIDIA_CLARA_OUTPUTS"
STAGENAME = "NVIDIA_CLARA_STAGENAME"

PAYLOAD_INPUT_NAME = "payload"  # Clara's name for the job's own input (no upstream)
DERIVED_OUTPUT_NAME = "output"


class PayloadError(ValueError):
    """A payload variable is malformed; the message names it."""


class PayloadEntry(NamedTuple):
    name: str  # "payload", or "<operator>/<output>"
    path: str


def parse_paths(value: str, variable: str = INPUTPATHS) -> List[PayloadEntry]:
    """``name:path;name:path`` → entries. Blank items (``a:/x;;``) are skipped; a path may
    hold ':' (split at the first one); names must be unique."""
    entries: List[PayloadEntry] = []
    seen = set()
    for item in value.split(";"):
        item = item.strip()
        if not item:
            continue
        name, sep, path = item.partition(":")
        name, path = name.strip(), path.strip()
        if not sep:
            raise PayloadError("%s: entry %r has no ':' (expected name:path;name:path)" % (variable, item))
        if not name:
            raise PayloadError("%s: entry %r has an empty name (expected name:path)" % (variable, item))
        if not path:
            raise PayloadError("%s: entry %r has an empty path (expected name:path)" % (variable, item))
        if "\0" in item:
            raise PayloadError("%s: entry %r holds a NUL character" % (variable, item))
        if name in seen:
            raise PayloadError("%s: name %r appears twice" % (variable, name))
        seen.add(name)
        entries.append(PayloadEntry(name, path))
    return entries


class ClaraPayload:
    """The stage's payload entries; ``environ`` defaults to the live ``os.environ``."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None):
        self._environ = environ

    @property
    def _env(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    @property
    def input_entries(self) -> List[PayloadEntry]:
        value = self._env.get(INPUTPATHS, "")
        if value.strip():
            return parse_paths(value, INPUTPATHS)
        path = self._derived_path(INPUTS)
        return [PayloadEntry(PAYLOAD_INPUT_NAME, path)] if path else []

    @property
    def output_entries(self) -> List[PayloadEntry]:
        value = self._env.get(OUTPUTPATHS, "")
        if value.strip():
            return parse_paths(value, OUTPUTPATHS)
        path = self._derived_path(OUTPUTS)
        if not path:
            return []
        stage = self._env.get(STAGENAME, "").strip()
        # Clara names an output "<operator>/<output>"; the chart has one output per stage.
        return [PayloadEntry("%s/%s" % (stage, DERIVED_OUTPUT_NAME) if stage else DERIVED_OUTPUT_NAME, path)]

    def _derived_path(self, variable: str) -> Optional[str]:
        """INPUTS/OUTPUTS are relative to APPDIR (an absolute value is kept as is)."""
        value = self._env.get(variable, "").strip()
        if not value:
            return None
        if "\0" in value:
            raise PayloadError("%s holds a NUL character" % variable)
        if os.path.isabs(value):
            return os.path.normpath(value)
        app_dir = self._env.get(APPDIR, "").strip()
        if not app_dir:
            raise PayloadError("%s=%r is relative to %s, which is not set" % (variable, value, APPDIR))
        if not os.path.isabs(app_dir):
            raise PayloadError("%s must be an absolute path, got %r" % (APPDIR, app_dir))
        return os.path.normpath(os.path.join(app_dir, value))

    def __repr__(self) -> str:
        try:
            return "ClaraPayload(input_entries=%r, output_entries=%r)" % (self.input_entries, self.output_entries)
        except PayloadError as e:
            return "ClaraPayload(<%s>)" % e


# What Clara's pipeline driver provides as a global; reads the environment on each access.
clara_payload = ClaraPayload()

class StageError(Exception):
    """A stage program's failure: ``run_stage`` prints it as one line and exits with ``exit_code``."""

    exit_code = 1


class InputProblem(StageError):
    """The stage's input is wrong (exit 2), as opposed to the stage failing on good input."""

    exit_code = 2


def run_stage(run: Callable[..., object], stage: str, *args: object) -> int:
    """``run(*args)`` as a stage program's main: a StageError or Ctrl-C is one line on stderr
    and the exit code (the reference stages in apps/ share this convention)."""
    try:
        run(*args)
    except StageError as exc:
        print(f"{stage}: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{stage}: interrupted", file=sys.stderr, flush=True)
        return 130
    return 0


__all__ = ["clara_payload", "ClaraPayload", "InputProblem", "PayloadEntry", "PayloadError", "StageError",
           "parse_paths", "run_stage"]


def _drive(argv: List[str]) -> int:
    """Run a script as ``__main__`` with ``clara_payload`` in its globals (the ODK's driver)."""
    import runpy
    import sys

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m clara_wf.payload SCRIPT [ARGS...]  (SCRIPT sees clara_payload as a global)",
              file=sys.stderr)
        return 2
    script = argv[0]
    if not os.path.isfile(script):
        print("clara_wf.payload: %s: no such file" % script, file=sys.stderr)
        return 2
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, init_globals={"clara_payload": clara_payload}, run_name="__main__")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_drive(sys.argv[1:]))
