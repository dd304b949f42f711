"""A workflow Job's pod on a container runtime: one container per stage, started together.

``podman kube play`` cannot do this (4.3 skips ``kind: Job`` and ignores ``subPath``), so
the pod spec is mapped here: each container's image, command (the image's entrypoint is
overridden as Kubernetes does), args, env, workingDir and volume mounts, with the payload
claim's ``subPath`` mapped onto folders of the job's payload.

Network: the pod shares the host's network namespace (podman: ``pod create --network
host``; docker: ``--network host`` for each container), so the stages reach each other on
localhost as in a pod, and reach a Triton on this machine (which listens on loopback only)
at the very URI the other engines pass.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from clara_wf.containers.runtime import LABEL, Runtime
from clara_wf.errors import InputError

STOP_GRACE_S = 5


@dataclass(frozen=True)
class ContainerSpec:
    stage: str
    image: str
    entrypoint: Optional[str]  # None: the image's own
    args: Tuple[str, ...]  # after the entrypoint (Kubernetes: command[1:] + args, or args alone)
    env: Tuple[Tuple[str, str], ...]
    workdir: Optional[str]
    mounts: Tuple[Tuple[Path, str, bool], ...]  # (host folder, container path, read-only)


def container_specs(pod_spec: dict, job_dir: Path) -> List[ContainerSpec]:
    """Each container of the pod spec, its payload mounts mapped to ``job_dir/subPath``."""
    claim_volumes = {v["name"] for v in pod_spec.get("volumes", []) if "persistentVolumeClaim" in v}
    specs = []
    for container in pod_spec.get("containers", []):
        name = container["name"]
        mounts = []
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in claim_volumes:
                raise InputError(f"stage {name!r}: volume {mount['name']!r} is not the payload claim; "
                                 "the container engine maps only the payload volume")
            host = job_dir.resolve() / mount.get("subPath", "")
            mounts.append((host, str(mount["mountPath"]), bool(mount.get("readOnly"))))
        command = [str(a) for a in container.get("command") or []]
        args = [str(a) for a in container.get("args") or []]
        env = tuple((str(e["name"]), str(e.get("value", ""))) for e in container.get("env", []))
        specs.append(ContainerSpec(
            stage=name, image=str(container["image"]), entrypoint=command[0] if command else None,
            args=tuple(command[1:] + args), env=env, workdir=container.get("workingDir"), mounts=tuple(mounts),
        ))
    return specs


def _volume(host: Path, target: str, read_only: bool) -> str:
    if ":" in str(host) or ":" in target:
        raise InputError(f"cannot mount {host} at {target} in a container: the path has a ':' "
                         "(move the project to a folder without one)")
    return f"{host}:{target}{':ro' if read_only else ''}"


@dataclass
class Pod:
    """The containers of one run; ``remove()`` leaves nothing behind (safe to call twice)."""

    runtime: Runtime
    job_id: str
    name: str = ""
    created: bool = False
    containers: Dict[str, str] = field(default_factory=dict)  # stage -> container name

    def __post_init__(self) -> None:
        self.name = self.name or f"clara-wf-{self.job_id[:8]}-{secrets.token_hex(3)}"

    def labels(self) -> List[str]:
        return ["--label", f"{LABEL}={self.name}", "--label", f"io.clara-wf.job={self.job_id}"]

    def create(self) -> None:
        self.created = True  # first: an interrupted create may still have made the pod
        if self.runtime.is_podman:
            self.runtime.run("pod", "create", "--name", self.name, "--network", "host", *self.labels(),
                             what="podman pod create", hint="check `podman info` (make setup installs catatonit)")

    def run_argv(self, spec: ContainerSpec) -> List[str]:
        """``run`` in the foreground: the client's output is the container's, its exit code the stage's."""
        cname = f"{self.name}-{spec.stage}"
        argv = ["run", "--name", cname, *self.labels(), "--pull", "never"]
        argv += ["--pod", self.name] if self.runtime.is_podman else ["--network", "host"]
        if not self.runtime.is_podman and os.getuid() != 0:
            argv += ["--user", f"{os.getuid()}:{os.getgid()}"]  # outputs owned by the user, as rootless podman does
        for key, value in spec.env:
            argv += ["--env", f"{key}={value}"]
        if spec.workdir:
            argv += ["--workdir", spec.workdir]
        for host, target, read_only in spec.mounts:
            argv += ["--volume", _volume(host, target, read_only)]
        if spec.entrypoint is not None:
            argv += ["--entrypoint", spec.entrypoint]
        return argv + [spec.image, *spec.args]

    def start(self, spec: ContainerSpec) -> subprocess.Popen:
        argv = self.run_argv(spec)
        self.containers[spec.stage] = f"{self.name}-{spec.stage}"
        # Own session: Ctrl-C reaches clara-wf, which stops the pod; a signal straight to the
        # clients would race the clean-up.
        return self.runtime.start(*argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

    def stop(self) -> None:
        """Stop what still runs (for --keep): the containers stay, stopped."""
        if not self.created:
            return
        if self.runtime.is_podman:
            self.runtime.run("pod", "stop", "--time", str(STOP_GRACE_S), self.name, what="podman pod stop",
                             ok_codes=range(256))
        elif self.containers:
            self.runtime.run("stop", "--time", str(STOP_GRACE_S), *self.containers.values(),
                             what="docker stop", ok_codes=range(256))

    def remove(self) -> None:
        """Stop and remove the pod and every container of this run (found by label, too)."""
        if not self.created:
            return
        if self.runtime.is_podman:
            self.runtime.run("pod", "rm", "--force", "--time", str(STOP_GRACE_S), self.name,
                             what="podman pod rm", ok_codes=range(256))
        names = set(self.containers.values())
        listed = self.runtime.run("ps", "--all", "--quiet", "--filter", f"label={LABEL}={self.name}",
                                  what=f"{self.runtime.name} ps", ok_codes=range(256)).stdout.split()
        names.update(listed)
        if names:
            grace = ["--time", str(STOP_GRACE_S)] if self.runtime.is_podman else []  # docker rm -f kills at once
            self.runtime.run("rm", "--force", *grace, *sorted(names), what=f"{self.runtime.name} rm",
                             ok_codes=range(256))
        self.created = False

    def leftovers(self) -> List[str]:
        """Containers of this run still present (tests check this is empty after a run)."""
        with contextlib.suppress(Exception):
            return self.runtime.run("ps", "--all", "--quiet", "--filter", f"label={LABEL}={self.name}",
                                    what=f"{self.runtime.name} ps").stdout.split()
        return []
