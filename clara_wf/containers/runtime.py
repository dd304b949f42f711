"""The container runtime clara-wf drives: podman, or docker (a Docker engine or podman's
docker-compatible CLI). Every call goes through ``clara_wf.external``.

Podman gets the project's ``containers.conf`` (runc, default ulimits) through
``CONTAINERS_CONF`` unless the user already points that variable somewhere.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from clara_wf import external
from clara_wf.errors import ExternalToolError, InputError

RUNTIMES = ("auto", "podman", "docker")
CONTAINERS_CONF = Path(__file__).with_name("containers.conf")
# A runtime that does not answer within this is treated as absent (auto) or an error.
PROBE_TIMEOUT_S = 20.0
# Every object clara-wf creates carries this label, so a clean-up can find what it left.
LABEL = "io.clara-wf.run"


@dataclass
class Runtime:
    name: str  # "podman" | "docker"
    binary: str
    env: Dict[str, str] = field(default_factory=dict)

    @property
    def is_podman(self) -> bool:
        return self.name == "podman"

    def argv(self, *args: str) -> List[str]:
        return [self.binary, *args]

    def run(self, *args: str, what: str, hint: str = "", ok_codes: Sequence[int] = (0,),
            cwd: Optional[Path] = None, timeout: Optional[float] = None) -> external.Result:
        return external.run(self.argv(*args), what=what, hint=hint, ok_codes=ok_codes, cwd=cwd,
                            env=self.env, timeout=timeout)

    def start(self, *args: str, **popen_args):
        """A long-running call (``logs -f``, ``build``) as a process whose output the caller reads."""
        return external.start(self.argv(*args), env=self.env, **popen_args)

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "inspect", "--format", "{{.Id}}", ref, what=f"{self.name} image inspect",
                        ok_codes=(0, 1, 125)).exit_code == 0


def runtime_env(name: str) -> Dict[str, str]:
    """The environment for every call of this runtime."""
    env = dict(os.environ)
    if name == "podman" and not env.get("CONTAINERS_CONF") and shutil.which("runc"):
        env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    return env


def _answers(name: str, binary: str) -> Optional[str]:
    """None when the runtime works here, else why not (one line)."""
    # `version` and not `info`: podman info takes ~0.3-1.4 s (it inspects the storage), version
    # ~0.03 s; podman-remote and docker still have to reach their service or daemon to answer.
    probe = ["version", "--format", "json"] if name == "podman" else ["version", "--format", "{{.Server.Version}}"]
    try:
        result = external.run([binary, *probe], what=f"{name} info", env=runtime_env(name),
                              ok_codes=range(256), timeout=PROBE_TIMEOUT_S)
    except ExternalToolError as err:
        return str(err)
    if result.exit_code != 0 or not result.stdout.strip():
        return external.last_lines(result.stderr or result.stdout, 1) or f"exit code {result.exit_code}"
    return None


def find_runtime(requested: str = "auto") -> Runtime:
    """podman or docker, whichever answers (podman first: it needs no daemon)."""
    if requested not in RUNTIMES:
        raise InputError(f"unknown container runtime {requested!r}: choose one of {', '.join(RUNTIMES)}")
    names = ("podman", "docker") if requested == "auto" else (requested,)
    reasons = []
    for name in names:
        binary = shutil.which(name)
        if binary is None:
            reasons.append(f"{name} is not installed")
            continue
        why = _answers(name, binary)
        if why is None:
            return Runtime(name=name, binary=binary, env=runtime_env(name))
        reasons.append(f"{name} does not answer ({why})")
    hint = ("install podman (`make setup` does on Debian/Ubuntu as root: podman, runc, catatonit) "
            "or start Docker Desktop / a Docker engine")
    raise ExternalToolError(f"no container runtime works here: {'; '.join(reasons)}; {hint}")
