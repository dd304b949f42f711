"""`clara-wf test --stage NAME --standalone`: run one operator as Clara's operator kit does.

Seed 001's script runs an operator container with its folders mounted, the variables of
``env.list`` (seed 000: ``NVIDIA_CLARA_INPUTPATHS`` / ``OUTPUTPATHS``, ``TRITON_*``) and
``NVIDIA_CLARA_NOSYNCLOCK=TRUE`` (start at once, no lock to wait for). Here the stage's
one-stage pod is rendered as for ``test --stage``, then its container gets those
variables and a mount for every path they name, from the job's payload folder:
``payload`` → ``JOB/STAGE/input``, an upstream output ``OP/OUT`` → ``JOB/OP/OUT`` (where
a workflow run leaves it). Everything else — the runner, the sandbox, the stage's
interpreter — is the local engine's, exactly as in a workflow run.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Dict, List, Mapping, Tuple

from clara_wf.errors import InputError
from clara_wf.payload import PAYLOAD_INPUT_NAME, PayloadError, parse_paths
from clara_wf.workflow import WorkflowRun

ENV_LIST = "env.list"
NOSYNCLOCK = "NVIDIA_CLARA_NOSYNCLOCK"
TRTISURI = "NVIDIA_CLARA_TRTISURI"
PATH_VARIABLES = ("NVIDIA_CLARA_INPUTPATHS", "NVIDIA_CLARA_OUTPUTPATHS")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_env_list(path: Path) -> Dict[str, str]:
    """``docker run --env-file`` syntax: ``NAME=value`` a line (the value verbatim), ``#``
    comments and blank lines skipped, a bare ``NAME`` takes the value from this environment."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path} is missing: it lists the variables a stand-alone run needs "
                         "(`clara-wf cs` writes one); or run the stage without --standalone") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path} cannot be read: {getattr(err, 'strerror', None) or err}") from None
    env: Dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        if not _NAME.fullmatch(name):
            raise InputError(f"{path}, line {number}: {name!r} is not a variable name (expected NAME=value)")
        if sep:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    return env


def env_list_path(run: WorkflowRun) -> Path:
    stage = run.stages[0]
    source = run.values.get(stage, {}).get("source") or f"apps/{stage}"
    return run.project.root / str(source) / ENV_LIST


def standalone_env(run: WorkflowRun) -> Dict[str, str]:
    """The stage's env.list, checked, with ``NVIDIA_CLARA_NOSYNCLOCK=TRUE``."""
    path = env_list_path(run)
    env = read_env_list(path)
    for variable in PATH_VARIABLES:
        try:
            entries = parse_paths(env.get(variable, ""), variable)
        except PayloadError as err:
            raise InputError(f"{path}: {err}") from None
        for entry in entries:
            if not entry.path.startswith("/"):
                raise InputError(f"{path}: {variable}: {entry.name!r} needs an absolute path, not {entry.path!r}")
    if not env.get("NVIDIA_CLARA_INPUTPATHS") or not env.get("NVIDIA_CLARA_OUTPUTPATHS"):
        raise InputError(f"{path} must set NVIDIA_CLARA_INPUTPATHS and NVIDIA_CLARA_OUTPUTPATHS "
                         "(e.g. payload:/input and <stage>/output:/output)")
    env[NOSYNCLOCK] = "TRUE"
    return env


def payload_folder(stage: str, entry_name: str) -> str:
    """Where an env.list entry lives in the job's payload (relative to JOB/)."""
    return f"{stage}/input" if entry_name == PAYLOAD_INPUT_NAME else entry_name


def apply(pod: dict, run: WorkflowRun, env: Mapping[str, str], *, keep_trtis: bool) -> dict:
    """The one-stage pod with the stand-alone variables and their mounts (a new dict).

    ``keep_trtis``: the run has its own Triton (``--trtis-uri``, or one started for a stage
    that lists the trtis service): the chart's ``NVIDIA_CLARA_TRTISURI`` wins over env.list's.
    """
    pod = copy.deepcopy(pod)
    stage = run.stages[0]
    (container,) = [c for c in pod["containers"] if c["name"] == stage]
    variables: List[dict] = container.setdefault("env", [])
    for name, value in env.items():
        if name == TRTISURI and keep_trtis:
            continue
        for item in variables:
            if item["name"] == name:
                item.clear()
                item.update(name=name, value=value)
                break
        else:
            variables.append({"name": name, "value": value})
    claims = {v["name"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
    mounts: List[dict] = container.setdefault("volumeMounts", [])
    volume = next((m["name"] for m in mounts if m["name"] in claims), None)
    if volume is None:
        raise InputError(f"stage {stage!r}: the rendered pod mounts no payload volume to put env.list's folders on")
    wanted: List[Tuple[str, str]] = []
    for variable in PATH_VARIABLES:
        for entry in parse_paths(env[variable], variable):
            wanted.append((entry.path.rstrip("/") or "/", payload_folder(stage, entry.name)))
    for path, sub_path in wanted:
        for mount in mounts:
            if mount["mountPath"].rstrip("/") == path:
                mount.update(name=volume, subPath=sub_path)
                break
        else:
            mounts.append({"name": volume, "mountPath": path, "subPath": sub_path})
    # The chart's own mount of an input folder goes: only env.list names the stage's inputs
    # (a job folder's runs bookkeeping would take that second mount for an output).
    inputs = {payload_folder(stage, e.name) for e in parse_paths(env["NVIDIA_CLARA_INPUTPATHS"], PATH_VARIABLES[0])}
    paths = {path for path, _ in wanted}
    container["volumeMounts"] = [m for m in mounts if not (m.get("subPath") in inputs
                                                           and m["mountPath"].rstrip("/") not in paths)]
    return pod
