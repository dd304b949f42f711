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
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from clara_wf import external, processes
from clara_wf.containers.runtime import LABEL, Runtime
from clara_wf.errors import InputError

STOP_GRACE_S = 5
# The watchdog (standard library only, started with -S): waits for "done" or end of file on
# stdin; at end of file clara-wf is gone, so it removes the pod (docker: the run's containers).
_WATCHDOG = """
import subprocess, sys
binary, name, kind = sys.argv[1:4]
try:
    said = sys.stdin.buffer.read()
except BaseException:
    said = b""
if b"done" not in said:
    if kind == "podman":
        subprocess.run([binary, "pod", "rm", "--force", "--time", "5", name], capture_output=True)
    else:
        ids = subprocess.run([binary, "ps", "--all", "--quiet", "--filter", "label=io.clara-wf.run=" + name],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run([binary, "rm", "--force", *ids], capture_output=True)
"""
JOB_LABEL = "io.clara-wf.job"
PID_LABEL = "io.clara-wf.pid"  # the clara-wf process that owns the run (see sweep_orphans)
KEEP_LABEL = "io.clara-wf.keep"  # --keep: left for the user, never swept


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
    keep: bool = False
    created: bool = False
    containers: Dict[str, str] = field(default_factory=dict)  # stage -> container name
    watchdog: Optional[subprocess.Popen] = None

    def __post_init__(self) -> None:
        self.name = self.name or f"clara-wf-{self.job_id[:8]}-{secrets.token_hex(3)}"

    def labels(self) -> List[str]:
        labels = ["--label", f"{LABEL}={self.name}", "--label", f"{JOB_LABEL}={self.job_id}",
                  "--label", f"{PID_LABEL}={os.getpid()}"]
        return labels + (["--label", f"{KEEP_LABEL}=true"] if self.keep else [])

    def create(self) -> None:
        self.created = True  # first: an interrupted create may still have made the pod
        self._start_watchdog()
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

    def start(self, spec: ContainerSpec, **popen_args) -> subprocess.Popen:
        argv = self.run_argv(spec)
        self.containers[spec.stage] = f"{self.name}-{spec.stage}"
        # Own session: Ctrl-C reaches clara-wf, which stops the pod; a signal straight to the
        # clients would race the clean-up.
        # Dies with clara-wf (SIGTERM, which the client passes on to the container).
        return processes.start_group(self.runtime.argv(*argv), env=self.runtime.env, die_with_parent=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen_args)

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

    def _start_watchdog(self) -> None:
        """A process that outlives a clara-wf killed with SIGKILL and removes the pod then.

        It reads a pipe from clara-wf: ``done`` = clara-wf cleaned up (or keeps the pod);
        end of file without it = clara-wf died, so it removes the pod. (A container's
        attached ``run`` client that dies leaves its container running: conmon keeps it.)
        """
        if self.keep:
            return
        self.watchdog = external.start(
            [sys.executable, "-S", "-c", _WATCHDOG, self.runtime.binary, self.name,
             "podman" if self.runtime.is_podman else "docker"],
            env=self.runtime.env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def _release_watchdog(self) -> None:
        if self.watchdog is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert self.watchdog.stdin is not None
            self.watchdog.stdin.write(b"done\n")
            self.watchdog.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.watchdog.wait(timeout=5)
        self.watchdog = None

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
        self._release_watchdog()

    def leftovers(self) -> List[str]:
        """Containers of this run still present (tests check this is empty after a run)."""
        with contextlib.suppress(Exception):
            return self.runtime.run("ps", "--all", "--quiet", "--filter", f"label={LABEL}={self.name}",
                                    what=f"{self.runtime.name} ps").stdout.split()
        return []


def _labels(entry: dict) -> Dict[str, str]:
    labels = entry.get("Labels") or {}
    if isinstance(labels, str):  # docker: "k=v,k=v"
        labels = dict(item.partition("=")[::2] for item in labels.split(",") if item)
    return {str(k): str(v) for k, v in labels.items()}


def _json_entries(text: str) -> List[dict]:
    """``ps --format '{{json .}}'``: podman 4.3 prints one JSON array, docker one object a line."""
    try:
        data = json.loads(text)
        return [e for e in (data if isinstance(data, list) else [data]) if isinstance(e, dict)]
    except ValueError:
        pass
    entries = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def sweep_orphans(runtime: Runtime) -> List[str]:
    """Remove the pods and containers of runs whose clara-wf process is gone.

    A clara-wf killed with SIGKILL cannot clean up: its watchdog removes the pod; should the
    watchdog be gone too (killed with it, a reboot), the next container run removes what is
    left. Runs kept with ``--keep`` are the user's and stay.
    """
    out = runtime.run("ps", "--all", "--filter", f"label={PID_LABEL}", "--format", "{{json .}}",
                      what=f"{runtime.name} ps", ok_codes=range(256)).stdout
    runs: Dict[str, List[str]] = {}
    for entry in _json_entries(out):
        labels = _labels(entry)
        pid = labels.get(PID_LABEL, "")
        if labels.get(KEEP_LABEL) == "true" or not pid.isdigit() or processes.alive(int(pid)):
            continue
        ident = str(entry.get("Id") or entry.get("ID") or "")
        runs.setdefault(labels.get(LABEL, ""), []).append(ident)
    for run_name, ids in sorted(runs.items()):
        if runtime.is_podman and run_name:
            runtime.run("pod", "rm", "--force", "--time", "0", run_name, what="podman pod rm", ok_codes=range(256))
        runtime.run("rm", "--force", *ids, what=f"{runtime.name} rm", ok_codes=range(256))
    return sorted(name for name in runs if name)
