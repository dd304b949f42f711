"""The one place where clara-wf runs other programs (helm, kubectl, docker).

Each call is logged (``--verbose`` shows it on stderr) and a failure becomes an
``ExternalToolError`` whose message says what failed and what to do, never a traceback.
Arguments marked secret are masked in the log; secrets must not be passed in argv at all
(pass them on stdin), so the masking is a second line of defence only.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from clara_wf.errors import ExternalToolError

log = logging.getLogger("clara_wf.external")

# What to tell the user when a program is missing.
INSTALL_HINTS = {
    "helm": "run `make setup` (it puts helm into .venv/bin) or install Helm 3/4, or set CLARA_WF_HELM",
    "kubectl": "run `make setup` or install kubectl",
    "docker": "install Docker, or build the stage images elsewhere",
    "podman": "run `make setup` (installs podman, runc and catatonit on Debian/Ubuntu as root) or install podman",
    "mmdebstrap": "apt-get install mmdebstrap (`make setup` does on Debian/Ubuntu as root), or pass --base-image",
}


@dataclass
class Result:
    argv: list
    exit_code: int
    stdout: str
    stderr: str


def find_program(name: str, env_var: Optional[str] = None) -> str:
    """Locate a program: an explicit env var, then the running venv's bin, then PATH."""
    if env_var and os.environ.get(env_var):
        path = os.environ[env_var]
        if not os.access(path, os.X_OK):
            raise ExternalToolError(f"{env_var}={path} is not an executable file")
        return path
    import sys

    venv_copy = Path(sys.prefix) / "bin" / name
    if os.access(venv_copy, os.X_OK):
        return str(venv_copy)
    found = shutil.which(name)
    if not found:
        raise ExternalToolError(f"{name} not found: {INSTALL_HINTS.get(name, 'install it or put it on PATH')}")
    return found


def format_command(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def last_lines(text: str, keep: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-keep:])



def run(
    argv: Sequence[str],
    *,
    what: str,
    hint: str = "",
    cwd: Optional[Path] = None,
    env: Optional[Mapping[str, str]] = None,
    stdin: Optional[str] = None,
    ok_codes: Sequence[int] = (0,),
    timeout: Optional[float] = None,
) -> Result:
    """Run a program to completion and return its output.

    ``what`` names the action for error messages ("helm template"); ``hint`` says what
    to do when it fails. (The standard library's subprocess, not the ``sh`` package the
    design first named: importing ``sh`` costs ~100 ms, a third of a local run's budget.)
    """
    import subprocess

    from clara_wf.redaction import child_environment

    argv = [str(a) for a in argv]
    log.info("$ %s", format_command(argv))
    try:
        proc = subprocess.run(
            argv, cwd=str(cwd) if cwd else None, env=child_environment(dict(env) if env is not None else None),
            input=stdin, capture_output=True, text=True, errors="replace",
            stdin=None if stdin is not None else subprocess.DEVNULL, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ExternalToolError(f"{what} did not answer within {timeout:g} s") from None
    except FileNotFoundError:
        name = Path(argv[0]).name
        raise ExternalToolError(f"{name} not found: {INSTALL_HINTS.get(name, 'install it or put it on PATH')}") from None
    except OSError as err:  # not executable, wrong architecture, ...
        raise ExternalToolError(f"{what}: cannot run {argv[0]}: {err.strerror or err}") from None
    if proc.returncode not in ok_codes:
        detail = last_lines(proc.stderr or proc.stdout) or f"exit code {proc.returncode}"
        log.info("%s failed (exit %s): %s", what, proc.returncode, proc.stderr.strip())
        message = f"{what} failed: {detail}"
        if hint:
            message += f" ({hint})"
        raise ExternalToolError(message)
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


def start(argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None, **popen_args):
    """Start a program whose output the caller reads as it comes (``subprocess.Popen``).

    A missing program is an ``ExternalToolError`` as in ``run``; the caller owns the process.
    """
    import subprocess

    from clara_wf.redaction import child_environment

    argv = [str(a) for a in argv]
    log.info("$ %s", format_command(argv))
    popen_args.setdefault("stdin", subprocess.DEVNULL)
    try:
        return subprocess.Popen(argv, env=child_environment(dict(env) if env is not None else None), **popen_args)
    except FileNotFoundError:
        name = Path(argv[0]).name
        raise ExternalToolError(f"{name} not found: {INSTALL_HINTS.get(name, 'install it or put it on PATH')}") from None
    except OSError as err:
        raise ExternalToolError(f"cannot run {argv[0]}: {err.strerror or err}") from None
