"""A real Triton Inference Server on this machine, without a cluster and without a GPU.

(Over 400 lines: finding the wheel's server and its python backend is half of it; tests patch
that discovery through this module, so it moves to ``triton/distribution.py`` with them.)

The ``nvidia-pytriton`` wheel (the ``local`` extra) bundles ``tritonserver`` with the
python backend. This module starts that binary detached (its own session, so a Ctrl-C
of the CLI does not reach it), records it in ``<state_dir>/triton.json``, and stops it
again. The CLI (``clara-wf install_trtis --local``) and the local engine call it; it never
prints or exits - it raises :mod:`clara_wf.errors` exceptions with one-line messages.

What it takes to run the bundled server outside pytriton (checked on 2.51 / pytriton 0.7.0):

* the python backend needs ``triton_python_backend_stub`` beside ``libtriton_python.so``;
  the wheel ships one stub per Python version under ``python_backend_stubs/<X.Y>/``, so we
  build a backend directory in the state folder out of symlinks (the wheel is untouched);
* ``LD_LIBRARY_PATH`` must hold the wheel's ``nvidia_pytriton.libs`` and the interpreter's
  ``LIBDIR`` (the stub links ``libpython3.X.so``);
* the stub embeds Python and locates its prefix by looking ``python3`` up on ``PATH``:
  with this interpreter's ``bin`` first on PATH it finds the virtualenv (``pyvenv.cfg``)
  and so its site-packages. PYTHONPATH is ignored by the stub, and a ``sys.path`` hook in
  a model would come too late: ``triton_python_backend_utils`` imports numpy first;
* that numpy must be < 2 - with numpy 2 the model loads and answers, but every output
  tensor arrives with 0 bytes. :func:`start` refuses to start in that case.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import sysconfig
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata, util
from pathlib import Path
from typing import Any, Dict, List, Optional

from clara_wf import processes
from clara_wf.errors import ExternalToolError, InputError
from clara_wf.triton.ready import Progress, is_ready, probe, ready_url, wait_ready

RECORD_NAME = "triton.json"
LOG_NAME = "triton.log"
LOCK_NAME = "triton.lock"
BACKENDS_SUBDIR = Path("triton") / "backends"
DEFAULT_PORTS = (8000, 8001, 8002)
LOCAL_ADDRESS = "127.0.0.1"
STOP_GRACE_SECONDS = 10.0
INSTALL_HINT = "run `make setup` (pip install -e '.[local]')"



@dataclass
class TritonInstance:
    """A local Triton server as recorded in ``triton.json``."""

    pid: int
    http_port: int
    grpc_port: int
    metrics_port: int
    model_repository: Path
    started_at: str
    log: Path
    address: str = LOCAL_ADDRESS
    shm_prefix: str = ""
    already_running: bool = False
    ready: bool = False

    @property
    def uri(self) -> str:
        """``host:port`` of the HTTP endpoint - the form NVIDIA_CLARA_TRTISURI takes."""
        host = LOCAL_ADDRESS if self.address in ("0.0.0.0", "") else self.address
        return f"{host}:{self.http_port}"

    def to_record(self) -> Dict[str, object]:
        return {
            "pid": self.pid,
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "model_repository": str(self.model_repository),
            "started_at": self.started_at,
            "log": str(self.log),
            "address": self.address,
            "shm_prefix": self.shm_prefix,
        }

    @classmethod
    def from_record(cls, data: Dict[str, Any]) -> "TritonInstance":
        return cls(
            pid=int(data["pid"]),
            http_port=int(data["http_port"]),
            grpc_port=int(data["grpc_port"]),
            metrics_port=int(data["metrics_port"]),
            model_repository=Path(str(data["model_repository"])),
            started_at=str(data["started_at"]),
            log=Path(str(data["log"])),
            address=str(data.get("address", LOCAL_ADDRESS)),
            shm_prefix=str(data.get("shm_prefix", "")),
        )


@dataclass(frozen=True)
class TritonDistribution:
    """The files of the tritonserver that the nvidia-pytriton wheel bundles."""

    binary: Path
    backend_files: Path  # .../tritonserver/backends/python
    stub: Path
    libs: Path

    @property
    def ld_library_path(self) -> List[str]:
        libdir = sysconfig.get_config_var("LIBDIR")
        return [str(self.libs)] + ([libdir] if libdir else [])


# --------------------------------------------------------------------------- discovery


def find_distribution() -> TritonDistribution:
    """Locate tritonserver, the python backend and its stub inside the installed wheel."""
    spec = util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ExternalToolError(f"Triton is not installed in this environment: {INSTALL_HINT}")
    package = Path(list(spec.submodule_search_locations)[0])
    server = package / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    dist = TritonDistribution(
        binary=server / "bin" / "tritonserver",
        backend_files=server / "backends" / "python",
        stub=server / "python_backend_stubs" / version / "triton_python_backend_stub",
        libs=package.parent / "nvidia_pytriton.libs",
    )
    if not dist.binary.is_file() or not (dist.backend_files / "libtriton_python.so").is_file():
        raise ExternalToolError(
            f"the installed nvidia-pytriton has no tritonserver binary or python backend under {server}: "
            f"reinstall it ({INSTALL_HINT})"
        )
    if not dist.stub.is_file():
        have = sorted(p.name for p in (server / "python_backend_stubs").glob("*") if p.is_dir())
        raise ExternalToolError(
            f"nvidia-pytriton has no python backend stub for Python {version} (it has {', '.join(have) or 'none'}): "
            f"use one of those Python versions for the virtualenv"
        )
    return dist


def check_libpython() -> None:
    """The stub links libpython3.X.so.1.0: it must be in LIBDIR or on the system library path."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    name = f"libpython{version}.so.1.0"
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and (Path(libdir) / name).exists():
        return
    import ctypes.util

    if ctypes.util.find_library(f"python{version}"):
        return
    raise ExternalToolError(
        f"the Triton python backend needs {name}, which this Python ({sys.executable}) does not have: "
        f"use a Python built with shared libraries (e.g. PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install) "
        f"or install the system package libpython{version}"
    )


def check_numpy() -> None:
    """The bundled python backend stub works with numpy 1.x only (numpy 2 gives empty outputs)."""
    try:
        version = metadata.version("numpy")
    except metadata.PackageNotFoundError:
        raise ExternalToolError(f"numpy is not installed in this environment: {INSTALL_HINT}") from None
    if int(version.split(".")[0]) >= 2:
        raise ExternalToolError(
            f"numpy {version} is installed, but the Triton python backend bundled with nvidia-pytriton 0.7.0 "
            f"needs numpy<2 (with numpy 2 every output comes back empty): pip install 'numpy<2'"
        )


def validate_model_repository(model_repository: Path) -> Path:
    """Check the standard Triton layout: <repo>/<model>/config.pbtxt and <repo>/<model>/<version>/."""
    repo = Path(model_repository).expanduser()
    if not repo.exists():
        raise InputError(f"model repository {repo} does not exist: pass the folder that holds the model folders")
    if not repo.is_dir():
        raise InputError(f"model repository {repo} is not a folder: pass the folder that holds the model folders")
    models = sorted(p for p in repo.iterdir() if p.is_dir())
    if not models:
        raise InputError(f"model repository {repo} holds no model folder: add <model>/config.pbtxt and <model>/1/")
    for model in models:
        if not (model / "config.pbtxt").is_file():
            raise InputError(
                f"model {model.name!r} in {repo} has no config.pbtxt: add {model / 'config.pbtxt'} "
                f"or move the folder out of the repository"
            )
        if not any(v.is_dir() and v.name.isdigit() for v in model.iterdir()):
            raise InputError(
                f"model {model.name!r} in {repo} has no version folder: put the model file in {model / '1'}/"
            )
    return repo.resolve()


def _port_free(port: int, address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As a server binds: a port in TIME_WAIT after the last Triton stopped is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def _any_free_port(address: str, taken: List[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port


def _choose_ports(http_port: Optional[int], address: str) -> List[int]:
    """HTTP, gRPC and metrics ports: 8000/8001/8002 when free, else free ones."""
    if http_port is not None:
        if not 0 < http_port < 65536:
            raise InputError(f"HTTP port {http_port} is not a valid port number: use 1-65535")
        if not _port_free(http_port, address):
            raise InputError(f"port {http_port} is already in use on {address}: choose another HTTP port")
        preferred = [http_port, http_port + 1, http_port + 2]
    else:
        preferred = list(DEFAULT_PORTS)
    ports: List[int] = []
    for port in preferred:
        if port < 65536 and port not in ports and _port_free(port, address):
            ports.append(port)
        else:
            ports.append(_any_free_port(address, ports))
    return ports


def _log_excerpt(log: Path, lines: int = 4, limit: int = 600) -> str:
    """The useful end of Triton's log, on one line."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    text = [line.strip() for line in text if line.strip() and not set(line.strip()) <= set("+-|")]
    errors = [line for line in text if line[:1] == "E" and line[1:5].isdigit()]
    picked = (errors or text)[-lines:]
    excerpt = " | ".join(picked) or "(empty log)"
    return excerpt if len(excerpt) <= limit else "..." + excerpt[-limit:]


# --------------------------------------------------------------------------- records


def _record_path(state_dir: Path) -> Path:
    return Path(state_dir) / RECORD_NAME


def _read_record(state_dir: Path) -> Optional[TritonInstance]:
    path = _record_path(state_dir)
    try:
        return TritonInstance.from_record(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)  # unreadable: nothing we can stop through it
        return None


def _write_record(state_dir: Path, instance: TritonInstance) -> None:
    path = _record_path(state_dir)
    from clara_wf import fsio

    fsio.atomic_write(path, json.dumps(instance.to_record(), indent=2) + "\n", durable=False)


def _remove_record(state_dir: Path) -> None:
    _record_path(state_dir).unlink(missing_ok=True)


@contextlib.contextmanager
def _state_lock(state_dir: Path):
    """Serialise start/stop of the server of one state folder (two CLIs at once)."""
    from clara_wf import fsio

    Path(state_dir).mkdir(parents=True, exist_ok=True)
    with fsio.lock(Path(state_dir) / LOCK_NAME, create=True):
        yield


def _remove_shm(prefix: str) -> None:
    """Shared-memory regions of the python backend survive a SIGKILL; remove ours."""
    if not prefix:
        return
    shm = Path("/dev/shm")
    if shm.is_dir():
        for region in shm.glob(f"{prefix}*"):
            with contextlib.suppress(OSError):
                region.unlink()


# --------------------------------------------------------------------------- public API


def status(state_dir: Path) -> Optional[TritonInstance]:
    """The recorded server if its process is alive (``ready`` says whether it serves); else None.

    A record whose process is gone is removed.
    """
    instance = _read_record(state_dir)
    if instance is None:
        return None
    if not (processes.alive(instance.pid) and processes.runs_program(instance.pid, "tritonserver")):
        _remove_record(state_dir)
        _remove_shm(instance.shm_prefix)
        return None
    instance.ready = is_ready(instance.uri)
    return instance


def start(
    state_dir: Path,
    model_repository: Path,
    *,
    http_port: Optional[int] = None,
    progress: Progress = None,
    timeout: float = 60,
    address: str = LOCAL_ADDRESS,
) -> TritonInstance:
    """Start the bundled tritonserver detached and wait until it is ready.

    If the server recorded in ``state_dir`` is alive and ready it is returned with
    ``already_running=True`` (it must serve the same model repository). ``address`` is
    the address Triton listens on (127.0.0.1: only this machine; "0.0.0.0" for
    containers on a bridge network).
    """
    state_dir = Path(state_dir).resolve()
    repo = validate_model_repository(model_repository)
    with _state_lock(state_dir):
        existing = status(state_dir)
        if existing is not None:
            if existing.model_repository != repo:
                raise InputError(
                    f"a local Triton (pid {existing.pid}, {existing.uri}) already serves {existing.model_repository}, "
                    f"not {repo}: stop it first with `clara-wf uninstall_trtis --local`"
                )
            if not existing.ready:
                try:
                    wait_ready(existing.uri, timeout, progress=progress)
                except ExternalToolError as exc:
                    raise ExternalToolError(
                        f"{exc}; its log: {existing.log}; or restart it: `clara-wf uninstall_trtis --local`"
                    ) from None
            existing.ready = True
            existing.already_running = True
            return existing

        dist = find_distribution()
        check_numpy()
        check_libpython()
        backends = _prepare_backends(state_dir, dist)
        ports = _choose_ports(http_port, address)
        log = state_dir / LOG_NAME
        shm_prefix = f"clara_wf_{uuid.uuid4().hex[:8]}_"
        command = [
            str(dist.binary),
            f"--model-repository={_shell_safe(repo)}",
            f"--backend-directory={_shell_safe(backends)}",
            f"--http-address={address}",
            f"--grpc-address={address}",
            f"--metrics-address={address}",
            f"--http-port={ports[0]}",
            f"--grpc-port={ports[1]}",
            f"--metrics-port={ports[2]}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=5",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            "--backend-config=python,shm-default-byte-size=16777216",
            "--backend-config=python,shm-growth-byte-size=67108864",
        ]
        from clara_wf.redaction import child_environment

        env = child_environment()  # never the NGC key
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            dist.ld_library_path + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        )
        # The stub finds its Python prefix (and the venv's site-packages) through `python3` on PATH.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])

        import subprocess

        from clara_wf import interrupts

        process = None
        try:
            # Started and written down as one step: a Ctrl-C in between would leave a server no record names.
            with interrupts.deferred():
                with open(log, "wb") as log_handle:
                    try:
                        process = processes.start_group(command, env=env, stdout=log_handle,
                                                        stderr=subprocess.STDOUT, cwd=state_dir, close_fds=True)
                    except ExternalToolError as exc:
                        raise ExternalToolError(f"{exc}; reinstall ({INSTALL_HINT})") from None
                instance = TritonInstance(
                    pid=process.pid,
                    http_port=ports[0],
                    grpc_port=ports[1],
                    metrics_port=ports[2],
                    model_repository=repo,
                    started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    log=log,
                    address=address,
                    shm_prefix=shm_prefix,
                )
                _write_record(state_dir, instance)
            _wait_started(process, instance, timeout, progress)
        except BaseException:
            if process is not None:
                with interrupts.deferred():  # a second Ctrl-C must not cut the clean-up short
                    processes.stop_groups([process], grace=2.0)
                    _remove_record(state_dir)
                    _remove_shm(shm_prefix)
            raise
        instance.ready = True
        return instance


def stop(state_dir: Path, *, grace: float = STOP_GRACE_SECONDS) -> bool:
    """Stop the recorded server: SIGTERM, then SIGKILL after ``grace`` seconds.

    Returns False when none was running (a stale record is removed).
    """
    from clara_wf import interrupts

    state_dir = Path(state_dir).resolve()
    # A Ctrl-C while stopping is held until the server and its record are gone.
    with interrupts.deferred(), _state_lock(state_dir):
        instance = _read_record(state_dir)
        if instance is None:
            return False
        running = processes.alive(instance.pid) and processes.runs_program(instance.pid, "tritonserver")
        if running:
            processes.stop_groups([instance.pid], grace=grace)
        _remove_record(state_dir)
        _remove_shm(instance.shm_prefix)
        return running


# --------------------------------------------------------------------------- internals


_SHELL_SAFE = re.compile(r"[A-Za-z0-9_./+-]+")


def _shell_safe(path: Path) -> Path:
    """The same folder by a path without spaces or quotes.

    tritonserver starts the python backend's stub through a shell with these paths
    unquoted, so a project in "/home/me/my scans" fails with a bare "bash: ... Is a
    directory" in its log. A link under /tmp/clara-wf-<uid>/ names the folder safely.
    """
    if _SHELL_SAFE.fullmatch(str(path)):
        return path
    import hashlib
    import tempfile

    links = Path(tempfile.gettempdir()) / f"clara-wf-{os.getuid()}"
    links.mkdir(mode=0o700, exist_ok=True)
    link = links / hashlib.sha256(str(path).encode()).hexdigest()[:16]
    if not (link.is_symlink() and Path(os.readlink(link)) == path):
        tmp = links / f".{link.name}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(path, target_is_directory=True)
        os.replace(tmp, link)
    return link


def _prepare_backends(state_dir: Path, dist: TritonDistribution) -> Path:
    """<state>/triton/backends/python: the wheel's python backend plus the stub for this Python."""
    backends = state_dir / BACKENDS_SUBDIR
    python = backends / "python"
    python.mkdir(parents=True, exist_ok=True)
    links = {p.name: p for p in dist.backend_files.iterdir() if p.is_file()}
    links["triton_python_backend_stub"] = dist.stub
    for name, target in links.items():
        link = python / name
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return backends


def _wait_started(process, instance: TritonInstance, timeout: float, progress: Progress) -> None:
    started = time.monotonic()
    deadline = started + timeout
    last_note = -1.0
    url = ready_url(instance.uri)
    while True:
        code = process.poll()
        if code is not None:
            raise ExternalToolError(
                f"Triton exited during start-up (exit code {code}): {_log_excerpt(instance.log)}; "
                f"full log: {instance.log}"
            )
        if probe(url, timeout=0.5) == 200:
            return
        now = time.monotonic()
        if now >= deadline:
            raise ExternalToolError(
                f"Triton did not become ready within {timeout:g}s: {_log_excerpt(instance.log)}; "
                f"full log: {instance.log}"
            )
        if progress is not None and now - last_note >= 1.0:
            progress(f"waiting for Triton to be ready on {instance.uri} ({now - started:.0f}s)")
            last_note = now
        time.sleep(0.05)
