"""The local engine: run a workflow's pod on this machine, one host process per container.

(Over 400 lines: path planning, the bwrap sandbox and stage supervision still live here;
the next split is planning → ``engines/host_plan.py``, which the container engine shares.)

The chart is rendered with real ``helm template`` and the same run-time values the
Kubernetes path passes; the Job's pod spec then says what to run. Each container becomes
a host process with that container's command, args and environment, started all at
once; the stage runner inside each one sequences them through lock files, exactly as in
the pod (docs/lock-protocol.md). The engine only starts, watches and stops them.

Paths: a container's volume mounts point into the job's payload folder
(``hostPath/JOB/subPath``).
- With ``bwrap`` (Debian's bubblewrap) each stage runs in a mount namespace where the
  pod's paths exist for real (``/app/input`` …), on a private root that binds the host's
  top-level folders, so nothing is created on the host outside the payload.
- Without it, each stage gets a folder standing in for its appDir, made of symbolic links
  (to the stage's source files and to the mounted payload folders), and every
  ``NVIDIA_CLARA_*`` value (and argument) that names a pod path is rewritten to the host
  path. A stage that finds its folders through the variables works unchanged; one that
  hard-codes ``/app/...`` needs bwrap.
``python3`` / ``python`` as a program runs with clara-wf's own interpreter, so the stage
sees the libraries installed with clara-wf (the image's interpreter does not exist here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from clara_wf import engines, forked_runner, payload, processes, rendering, runs
from clara_wf.engines.base import SANDBOXES, RunPlan
from clara_wf.errors import ExternalToolError, InputError
from clara_wf.events import (
    DONE,
    FAILED,
    RUNNING,
    STOPPED,
    WAITING,
    EventSink,
    Info,
    JobOutcome,
    LogLine,
    RunStarted,
    StageState,
    StageUpdate,
    TritonReady,
)
from clara_wf.job_lock import other_jobs_running
from clara_wf.runner import procs as procs_util
from clara_wf.runner import protocol
from clara_wf.workflow import WorkflowRun

STOP_GRACE_S = processes.STOP_GRACE_S
_KNOWN_CHILDREN: set = set()  # clara-wf's own children during a run: never ended as orphans
# Runners forked from clara-wf (engines/forked_runner.py) with --sandbox none; CLARA_WF_FORK_RUNNERS=0
# starts each as its own interpreter instead (what bench/local_run compares).
FORK_RUNNERS = os.environ.get("CLARA_WF_FORK_RUNNERS", "1") != "0"
_ORPHANS_POSSIBLE: set = set()  # non-empty once a runner ended without ending its program
POLL_S = 0.01
PYTHON_NAMES = {"python", "python3"}
RUNNER_MODULE = "clara_wf.runner"
# Where clara_wf can be imported from without site-packages (for `python -S -m clara_wf.runner`).
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
# What a stage process inherits from the host (a pod's container inherits nothing).
HOST_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", protocol.POLL_ENV)


@dataclass
class StagePlan:
    """One container of the pod, mapped onto this machine."""

    name: str
    argv: List[str]
    env: Dict[str, str]
    cwd: Path
    lock_dir: Path
    lock_name: str
    wait_names: List[str]
    log_file: Optional[Path]
    mounts: List[Tuple[str, Path]]  # (pod path, host path)
    app_dir: str
    source: Optional[Path]


@dataclass
class StageRecord:
    name: str
    state: StageState = WAITING
    started: Optional[float] = None
    ended: Optional[float] = None
    exit_code: Optional[int] = None
    detail: str = ""
    status: str = ""
    runner: Optional[dict] = None  # the runner's lock or failure marker


def sandbox_available() -> bool:
    return shutil.which("bwrap") is not None


def choose_sandbox(requested: str) -> str:
    if requested not in SANDBOXES:
        raise InputError(f"unknown sandbox {requested!r}: choose one of {', '.join(SANDBOXES)}")
    if requested == "auto":
        return "bwrap" if sandbox_available() else "none"
    if requested == "bwrap" and not sandbox_available():
        raise InputError("bwrap is not installed: `apt-get install bubblewrap`, or use --sandbox none")
    return requested


# --- planning ---------------------------------------------------------------------------


def _host_path_for(value: str, mapping: List[Tuple[str, Path]]) -> Optional[str]:
    for pod_path, host_path in mapping:
        if value == pod_path or value.startswith(pod_path.rstrip("/") + "/"):
            return str(host_path) + value[len(pod_path.rstrip("/")):]
    return None


def _map_env_value(key: str, value: str, mapping: List[Tuple[str, Path]]) -> str:
    """A pod path in a variable → the host path; Clara's ``name:path;…`` lists item by item."""
    if key in (payload.INPUTPATHS, payload.OUTPUTPATHS):
        try:
            entries = payload.parse_paths(value, key)
        except payload.PayloadError as err:
            raise InputError(str(err)) from None
        return ";".join(f"{e.name}:{_host_path_for(e.path, mapping) or e.path}" for e in entries)
    return (_host_path_for(value, mapping) or value) if value.startswith("/") else value


def _python_argv(argv: List[str]) -> List[str]:
    """``python3`` as the runner and as the program after ``--`` → clara-wf's interpreter."""
    out = list(argv)
    positions = [0] + [i + 1 for i, a in enumerate(out) if a == "--" and i + 1 < len(out)]
    for i in positions:
        if out[i] in PYTHON_NAMES:
            out[i] = sys.executable
    if out[:3] == [sys.executable, "-m", RUNNER_MODULE]:
        # The runner needs only the standard library: skipping site saves ~30-60 ms per stage.
        out.insert(1, "-S")
    return out


def plan_stages(run: WorkflowRun, pod: dict, work_dir: Path, sandbox: str) -> List[StagePlan]:
    """Map each container of the pod spec onto host folders of the job's payload."""
    claim_volumes = {v["name"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
    plans = []
    for container in pod["containers"]:
        name = container["name"]
        env = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
        values = run.values.get(name, {})
        app_dir = env.get("NVIDIA_CLARA_APPDIR") or str(values.get("appDir") or "/app")
        mounts = []
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in claim_volumes:
                raise InputError(f"stage {name!r}: volume {mount['name']!r} is not the payload claim; "
                                 "the local engine maps only the payload volume")
            host = run.job_dir.resolve() / mount.get("subPath", "")
            mounts.append((mount["mountPath"], host))
        source = None
        if values.get("source"):
            source = (run.project.root / str(values["source"])).resolve()
            if not source.is_dir():
                source = None  # a fresh `cs` stage has no app yet; its program may be absolute

        stage_work = work_dir / name
        if sandbox == "bwrap":
            mapping = []
            cwd_pod = container.get("workingDir") or app_dir
            cwd = Path(cwd_pod)
        else:
            # appDir itself becomes a folder of links; mounts outside it are mapped directly.
            mapping = sorted(mounts + [(app_dir, stage_work / "app")], key=lambda m: -len(m[0]))
            cwd = Path(_host_path_for(container.get("workingDir") or app_dir, mapping) or app_dir)
        env = {k: _map_env_value(k, v, mapping) for k, v in env.items()}
        argv = [*container.get("command", []), *container.get("args", [])]
        if not argv:
            raise InputError(f"stage {name!r} has no command: set stages.{name}.command in values.yaml")
        argv = [(_host_path_for(a, mapping) or a) if a.startswith("/") else a for a in argv]

        lock_dir = Path(env.get("NVIDIA_CLARA_LOCKDIR", ""))
        log_name = env.get("NVIDIA_CLARA_LOGNAME")
        if sandbox == "bwrap":
            lock_dir = Path(_host_path_for(str(lock_dir), mounts) or lock_dir)
            log_file = Path(_host_path_for(log_name, mounts) or log_name) if log_name else None
        else:
            log_file = Path(log_name) if log_name else None
        waits = [w.strip() for w in env.get("NVIDIA_CLARA_WAITNAME", "").split(",") if w.strip()]
        plans.append(StagePlan(
            name=name, argv=_python_argv(argv), env=env, cwd=cwd, lock_dir=lock_dir,
            lock_name=env.get("NVIDIA_CLARA_LOCKNAME", f"{name}.lock"), wait_names=waits,
            log_file=log_file, mounts=mounts, app_dir=app_dir, source=source,
        ))
    check_job_paths(run.job_dir, plans)
    return plans


def check_job_paths(job_dir: Path, plans: List[StagePlan]) -> None:
    """Every folder and file a run writes in the job's folder stays in it: a symlink planted in
    the test data (locks/, logs/NAME.log, an output folder) would make the run — under bwrap
    too, whose bind mounts follow links — write somewhere else. Refused before anything starts."""
    from clara_wf import fsio, runs
    from clara_wf.runner import protocol

    root = job_dir.resolve()
    paths: List[Path] = [job_dir / runs.RECORD_NAME]
    for plan in plans:
        paths += [host for _, host in plan.mounts]
        if plan.lock_dir.is_absolute():
            paths += [plan.lock_dir, plan.lock_dir / protocol.TMP_DIR, plan.lock_dir / plan.lock_name,
                      plan.lock_dir / protocol.failure_marker_name(plan.lock_name)]
        if plan.log_file is not None:
            paths.append(plan.log_file)
    for path in paths:
        if not str(path).startswith(str(root)) and not str(path).startswith(str(job_dir)):
            continue  # not in the job's folder (a pod path the sandbox maps, an absolute log elsewhere)
        try:
            fsio.check_inside(path, root)
        except fsio.UnsafePath:
            raise InputError(f"{path} is a symlink that leads out of the job's folder {job_dir}: clara-wf writes "
                             "a run's files only inside it; remove the link") from None


def _link_app_dir(plan: StagePlan, app: Path) -> None:
    """The no-sandbox stand-in for the image's appDir: links to the source and the mounts."""
    if app.exists():
        shutil.rmtree(app)
    app.mkdir(parents=True)
    if plan.source:
        for entry in plan.source.iterdir():
            (app / entry.name).symlink_to(entry)
    for pod_path, host in plan.mounts:
        rel = PurePosixPath(pod_path).relative_to(plan.app_dir) if pod_path.startswith(plan.app_dir.rstrip("/") + "/") else None
        if rel is None:
            continue
        link = app / str(rel)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink() if link.is_symlink() or link.is_file() else shutil.rmtree(link)
        link.symlink_to(host, target_is_directory=True)


def _bwrap_argv(plan: StagePlan) -> List[str]:
    """A private root that binds the host's top-level folders, with the pod's paths on top."""
    # Its own PID namespace: when the runner ends (even by SIGKILL), or clara-wf dies
    # (--die-with-parent), the kernel ends every process of the stage, setsid'ed ones too.
    argv = ["bwrap", "--die-with-parent", "--unshare-pid", "--tmpfs", "/"]
    for top in sorted(os.listdir("/")):
        if top in ("proc", "dev"):
            continue
        path = f"/{top}"
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--dev-bind", path, path]
    argv += ["--dev-bind", "/dev", "/dev", "--proc", "/proc", "--tmpfs", plan.app_dir]
    if plan.source:
        for entry in sorted(plan.source.iterdir()):
            argv += ["--ro-bind", str(entry), f"{plan.app_dir.rstrip('/')}/{entry.name}"]
    for pod_path, host in sorted(plan.mounts, key=lambda m: len(m[0])):
        argv += ["--bind", str(host), pod_path]
    argv += ["--chdir", str(plan.cwd), "--"]
    return argv + plan.argv


# --- running ----------------------------------------------------------------------------


def _pump(stream, stage: str, sink: "queue.Queue") -> None:
    for raw in iter(stream.readline, b""):
        sink.put(LogLine(stage, raw.decode("utf-8", "replace").rstrip("\n")))
    stream.close()


def _stop_stages(procs: Dict[str, Any]) -> None:
    """Stop runners (processes.stop_groups); then what a runner killed before it could end
    its program left in its session, and note that orphans may have come to clara-wf."""
    processes.stop_groups(list(procs.values()), STOP_GRACE_S)
    for name, proc in procs.items():
        if procs_util.kill_session(proc.pid):
            _ORPHANS_POSSIBLE.add(name)


def _payload_inputs(run: WorkflowRun, plans: List[StagePlan], pod: dict) -> List[Path]:
    """Host folders the job's payload must provide: the first stage's input (seed form),
    and every input named ``payload`` in a stage's NVIDIA_CLARA_INPUTPATHS (DAG form)."""
    containers = {c["name"]: c for c in pod["containers"]}
    found = []
    for index, plan in enumerate(plans):
        env = {e["name"]: str(e.get("value", "")) for e in containers[plan.name].get("env", [])}
        if env.get(payload.INPUTPATHS):
            wanted = [e.path for e in payload.parse_paths(env[payload.INPUTPATHS])
                      if e.name == payload.PAYLOAD_INPUT_NAME]
        elif index == 0:
            in_name = ((run.values.get(plan.name, {}).get("mount") or {}).get("in") or {}).get("name", "input")
            wanted = [f"{plan.app_dir.rstrip('/')}/{in_name}"]
        else:
            wanted = []
        found += [host for pod_path, host in plan.mounts if pod_path in wanted]
    return list(dict.fromkeys(found))


class LocalEngine:
    """Each container of the workflow's pod as a process on this machine."""

    name = "local"
    uses_images = False

    def run(self, plan: RunPlan, sink: EventSink) -> JobOutcome:
        return run_workflow(plan, sink)

    def planned_trtis_uri(self, plan: RunPlan) -> Optional[str]:
        return None  # the local Triton's address is known once it is up


engines.register(LocalEngine())


def run_workflow(plan: RunPlan, on_event: EventSink, helm=None) -> JobOutcome:
    """Run the workflow on this machine; the outcome says which stage failed, if any.

    The caller holds the job's lock (``clara_wf.job_lock``) and keeps the run record.
    """
    run = plan.run
    sandbox = choose_sandbox(plan.sandbox)
    started = time.monotonic()
    timings: Dict[str, object] = {}
    # Render once to check everything before anything starts (Triton takes seconds).
    t0 = time.monotonic()
    work_dir = run.project.state_dir / "runs" / run.job_id
    pod = rendering.job_pod_spec(rendering.render_documents(run, release=plan.release, helm=helm))
    plans = plan_stages(run, pod, work_dir, sandbox)
    timings["render_s"] = time.monotonic() - t0
    check_payload_inputs(run, plans, pod)
    # This run's job folder holds only its own files from here on (clara_wf/runs.py).
    prepared = runs.prepare_job(runs.layout_from_pod(pod, run.job_dir, run.values), plan.run_id or runs.new_run_id(),
                                run.job_id, plan.rerun, keep=plan.keep_runs, clean=plan.clean)
    on_event(RunStarted(prepared))
    selected = set(plan.rerun.run) if plan.rerun is not None else None
    deferred: List[Callable[[], None]] = []
    with stage_triton(plan, on_event, timings, deferred) as run:
        if run is not plan.run:  # the stages get the Triton's URI: render again with it
            t0 = time.monotonic()
            plans = plan_stages(run, rendering.job_pod_spec(rendering.render_documents(run, release=plan.release, helm=helm)),
                                work_dir, sandbox)
            timings["render_s"] = float(timings["render_s"]) + time.monotonic() - t0  # type: ignore[arg-type]
        if selected is not None:
            plans = [p for p in plans if p.name in selected]
        outcome = run_stages(plans, work_dir, sandbox, plan.timeout, on_event, timings)
    if deferred:
        # The caller shows the outcome first, then stops Triton (JobOutcome.teardown).
        outcome.teardown = deferred[0]
    timings["total_s"] = time.monotonic() - started
    outcome.timings = timings
    return outcome


def check_payload_inputs(run: WorkflowRun, plans: List[StagePlan], pod: dict) -> None:
    """The job's input folders exist, before anything starts."""
    for folder in _payload_inputs(run, plans, pod):
        if not folder.is_dir():
            raise InputError(f"the job's input folder {folder} is missing: put the input of the workflow's first stage there")


@contextlib.contextmanager
def stage_triton(plan: RunPlan, on_event: EventSink, timings: Dict[str, object],
                 deferred: Optional[List[Callable[[], None]]] = None) -> Iterator[WorkflowRun]:
    """The Triton the stages use on this machine (local and container engines): ``--trtis-uri``
    checked, or the local one started (and stopped after the last run using it).

    Yields the run with that Triton's URI (the plan's own run when no stage needs Triton).
    With ``plan.defer_teardown`` and a ``deferred`` list, a run that ends normally appends
    the stop there instead of doing it (the caller shows the outcome first); an exception
    (Ctrl-C) still stops Triton at once."""
    run, trtis_uri = plan.run, plan.trtis_uri
    if not run.needs_triton:
        yield run
        return
    from clara_wf import interrupts

    state_dir = run.project.state_dir
    release = False  # a Triton started for runs: the last run using it stops it
    try:
        t0 = time.monotonic()
        from clara_wf.triton import local as triton_local
        from clara_wf.triton.ready import wait_ready

        if trtis_uri:
            on_event(Info(f"checking Triton at {trtis_uri} ..."))
            wait_ready(trtis_uri, timeout=10)
            uri = trtis_uri
        else:
            marker = _auto_triton_marker(state_dir)
            wrote_marker = False
            with interrupts.deferred():
                # Marked before it starts, so that a signal at any moment of the start finds it ours to stop.
                if not marker.exists() and triton_local.status(state_dir) is None:
                    state_dir.mkdir(parents=True, exist_ok=True)
                    marker.write_text(str(os.getpid()))
                    wrote_marker = True
                release = marker.exists()
            instance = triton_local.start(
                state_dir, run.project.test_data_dir / "models",
                progress=lambda message: on_event(Info(message)),
            )
            if instance.already_running and wrote_marker:  # `install_trtis --local` won the race: not ours
                with interrupts.deferred():
                    marker.unlink(missing_ok=True)
                    release = False
            on_event(Info(f"Triton {'already running' if instance.already_running else 'started'} at {instance.uri}"))
            uri = instance.uri
        on_event(TritonReady(uri))
        timings["triton_start_s"] = time.monotonic() - t0
        yield dataclasses.replace(run, trtis_uri=uri)
        if release and plan.defer_teardown and deferred is not None:
            deferred.append(functools.partial(_release_triton_deferred, state_dir, run.job_id, on_event, timings))
            release = False
    finally:
        if release:
            with interrupts.deferred():
                _release_triton(state_dir, run.job_id, on_event, timings)


def _release_triton_deferred(state_dir: Path, job_id: str, on_event: EventSink, timings: Dict[str, object]) -> None:
    """The stop handed to the caller (JobOutcome.teardown): signals wait until it is done."""
    from clara_wf import interrupts

    with interrupts.deferred():
        _release_triton(state_dir, job_id, on_event, timings)


def _auto_triton_marker(state_dir: Path) -> Path:
    """Present while the local Triton was started by a `test` run (not by install_trtis --local)."""
    return state_dir / "triton.auto"


def _release_triton(state_dir: Path, job_id: str, on_event: EventSink, timings: Dict[str, object]) -> None:
    """Stop the Triton that runs started, unless another run still uses it (it stops it then)."""
    from clara_wf.triton import local as triton_local

    if other_jobs_running(state_dir, job_id):
        with contextlib.suppress(Exception):
            on_event(Info("leaving the local Triton running: another run still uses it"))
        return
    # Stop first, report after: the display may be gone (a closed pipe, Ctrl-C).
    t0 = time.monotonic()
    triton_local.stop(state_dir)
    with contextlib.suppress(FileNotFoundError):
        _auto_triton_marker(state_dir).unlink()
    timings["teardown_s"] = time.monotonic() - t0
    with contextlib.suppress(Exception):
        on_event(Info(f"stopped the local Triton started for the runs ({timings['teardown_s']:.1f} s)"))


def _prepare_folders(plans: List[StagePlan], work_dir: Path, sandbox: str) -> None:
    for plan in plans:
        for _, host in plan.mounts:
            host.mkdir(parents=True, exist_ok=True)  # the first input was checked to exist
        if sandbox == "none":
            _link_app_dir(plan, work_dir / plan.name / "app")
    # The protocol asks the launcher for a lock folder without this run's lock names in it.
    for plan in plans:
        plan.lock_dir.mkdir(parents=True, exist_ok=True)
        for name in (plan.lock_name, protocol.failure_marker_name(plan.lock_name)):
            with contextlib.suppress(FileNotFoundError):
                (plan.lock_dir / name).unlink()


def _stage_env(plan: StagePlan) -> Dict[str, str]:
    env = {k: os.environ[k] for k in HOST_ENV if k in os.environ}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(plan.env)
    if "-S" in plan.argv[1:2]:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    return env


Launch = Callable[[StagePlan], subprocess.Popen]


def run_stages(plans, work_dir, sandbox, timeout, on_event, timings, launch: Optional[Launch] = None) -> JobOutcome:
    """Start every stage at once, follow them to the end, stop them all on any exception.

    ``launch`` starts one stage's process (default: a host process, under bwrap or not);
    the container engine passes its own (a ``podman run`` whose exit is the container's)."""
    _prepare_folders(plans, work_dir, sandbox)
    # Orphans of a runner killed with SIGKILL come to clara-wf (setsid'ed ones too) while
    # the stages run: the engine ends them (_stand_in_for, and at the end). Children it had
    # before (a Triton) are not touched. Only a runner that died without its record can
    # leave any: a runner that ends normally has ended its program's descendants.
    _ORPHANS_POSSIBLE.clear()
    subreaper = procs_util.become_subreaper()
    if subreaper:
        _KNOWN_CHILDREN.clear()
        _KNOWN_CHILDREN.update(p for p in procs_util.descendants(os.getpid()) if procs_util.parent_of(p) == os.getpid())
    records = {p.name: StageRecord(p.name) for p in plans}
    procs: Dict[str, subprocess.Popen] = {}
    logs: "queue.Queue" = queue.Queue()
    t_launch = time.monotonic()
    try:
        for plan in plans:
            proc = (launch or (lambda p: _start_host_process(p, sandbox)))(plan)
            procs[plan.name] = proc
            _KNOWN_CHILDREN.add(proc.pid)
            for stream in (proc.stdout, proc.stderr):
                threading.Thread(target=_pump, args=(stream, plan.name, logs), daemon=True).start()
            on_event(StageUpdate(plan.name, WAITING, ", ".join(plan.wait_names)))
        timings["launch_s"] = time.monotonic() - t_launch
        outcome = _watch(plans, procs, records, logs, timeout, on_event)
    except BaseException:
        _stop_stages(procs)
        with contextlib.suppress(Exception):  # the display may be gone (a closed pipe)
            _drain(logs, on_event)
        by_name = {p.name: p for p in plans}
        for name, record in records.items():
            if record.state not in (DONE, FAILED):
                record.state, record.status, record.ended = STOPPED, "interrupted", time.time()
                record.exit_code = procs[name].returncode if name in procs else None
                with contextlib.suppress(Exception):
                    on_event(_update(record, by_name[name]))
        raise
    finally:
        if subreaper:
            if _ORPHANS_POSSIBLE:
                procs_util.end_orphans(_KNOWN_CHILDREN)
            procs_util.become_subreaper(False)
    _drain(logs, on_event)
    timings["stages"] = {r.name: (r.ended - r.started) if r.started and r.ended else None for r in records.values()}
    return outcome


def _start_host_process(plan: StagePlan, sandbox: str) -> Any:
    """A ``subprocess.Popen`` of the stage's container command (under bwrap), or, with
    --sandbox none, its runner forked from clara-wf (no interpreter start per stage)."""
    argv = _bwrap_argv(plan) if sandbox == "bwrap" else plan.argv
    cwd = None if sandbox == "bwrap" else plan.cwd
    program = forked_runner.runner_program(argv) if sandbox == "none" and FORK_RUNNERS else None
    try:
        if program is not None:
            return forked_runner.ForkedRunner(program, _stage_env(plan), cwd)
        return processes.start_group(argv, cwd=cwd, env=_stage_env(plan), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, die_with_parent=True)
    except ExternalToolError as err:
        raise ExternalToolError(f"stage {plan.name}: {err}") from None
    except OSError as err:  # fork() refused (no memory, process limit)
        raise ExternalToolError(f"stage {plan.name}: cannot start its runner: {err.strerror or err}") from None


def _update(record: StageRecord, plan: StagePlan) -> StageUpdate:
    """The stage's state as an event, with what the run record keeps."""
    return StageUpdate(record.name, record.state, record.detail, record.exit_code, status=record.status,
                       started=record.started, ended=record.ended,
                       log=str(plan.log_file) if plan.log_file else None, runner=record.runner)


def _drain(logs: "queue.Queue", on_event: EventSink) -> None:
    while True:
        try:
            on_event(logs.get_nowait())
        except queue.Empty:
            return


def _watch(plans, procs, records, logs, timeout, on_event) -> JobOutcome:
    deadline = time.monotonic() + timeout if timeout and timeout > 0 else None
    by_name = {p.name: p for p in plans}
    pending = set(procs)
    timed_out = False
    still: set = set()
    while pending:
        try:
            on_event(logs.get(timeout=POLL_S))
            _drain(logs, on_event)
        except queue.Empty:
            pass
        for name in sorted(pending):
            plan, record, proc = by_name[name], records[name], procs[name]
            code = proc.poll()
            if record.state == WAITING and all((plan.lock_dir / w).exists() for w in plan.wait_names):
                if code is None or (plan.lock_dir / plan.lock_name).exists():
                    record.state, record.started = RUNNING, time.time()
                    on_event(_update(record, plan))
            if code is None:
                continue
            pending.discard(name)
            _finish(plan, record, code)
            if record.runner is None:
                # The runner died without its record (SIGKILL, a full disk, LOCKDIR gone):
                # its dependants must learn it now, not at their TIMEOUT.
                _stand_in_for(plan, record, procs[name], plans, procs, records, pending, on_event)
            on_event(_update(record, plan))
        if deadline is not None and time.monotonic() > deadline and pending:
            timed_out = True
            still = set(pending)
            _stop_stages({n: procs[n] for n in pending})
            for name in sorted(pending):
                record = records[name]
                record.state, record.ended = FAILED, time.time()
                record.exit_code = procs[name].returncode
                record.detail = f"stopped: the run took longer than --timeout {timeout:g} s"
                record.status = "timeout"
                on_event(_update(record, by_name[name]))
            break

    failed = [r for r in records.values() if r.state == FAILED]
    root = _root_cause(failed, by_name)
    stages = {r.name: _update(r, by_name[r.name]) for r in records.values()}
    if timed_out:
        message = f"the workflow did not finish within {timeout:g} s (still running: {', '.join(sorted(still))})"
    elif root:
        message = f"stage {root.name} failed: {root.detail}"
    else:
        message = "every stage succeeded"
    return JobOutcome(succeeded=not failed, stages=stages, failed_stage=root.name if root else None,
                      message=message, timed_out=timed_out)


def _finish(plan: StagePlan, record: StageRecord, code: int) -> None:
    record.exit_code = code
    record.ended = time.time()
    lock = protocol.read_record(str(plan.lock_dir / plan.lock_name)) if (plan.lock_dir / plan.lock_name).exists() else None
    marker_path = plan.lock_dir / protocol.failure_marker_name(plan.lock_name)
    marker = protocol.read_record(str(marker_path)) if marker_path.exists() else None
    source = lock if code == 0 else marker
    record.runner = source or None
    if source:
        record.started = source.get("start_epoch") or record.started
        record.ended = source.get("end_epoch") or record.ended
        record.status = source.get("status", "")
    if code == 0 and lock is not None:
        record.state, record.detail = DONE, ""
        return
    record.state = FAILED
    if marker and marker.get("message"):
        record.detail = marker["message"]
    elif code in protocol.RUNNER_EXIT_CODES:
        record.detail = protocol.RUNNER_EXIT_CODES[code]
    elif code < 0 or code > protocol.EXIT_SIGNAL_BASE:
        record.detail = f"killed by signal {abs(code) if code < 0 else code - protocol.EXIT_SIGNAL_BASE}"
    else:
        record.detail = f"exited with {code}"
    if plan.log_file:
        record.detail += f" (log: {plan.log_file})"


def _stand_in_for(plan: StagePlan, record: StageRecord, proc: subprocess.Popen, plans: List[StagePlan],
                  procs: Dict[str, subprocess.Popen], records: Dict[str, StageRecord], pending: set,
                  on_event: EventSink) -> None:
    """Write the failure marker a dead runner could not write, so its dependants stop within
    a hand-off; when that fails too (full disk, LOCKDIR gone), stop them directly."""
    procs_util.kill_session(proc.pid)  # its program, if the runner was killed before ending it
    procs_util.end_orphans(_KNOWN_CHILDREN)  # what it had setsid'ed, re-parented to clara-wf
    _ORPHANS_POSSIBLE.add(plan.name)
    why = record.detail or "ended"
    message = f"the stage runner ended without writing its lock or failure marker ({why})"
    now = time.time()
    marker = plan.lock_dir / protocol.failure_marker_name(plan.lock_name)
    try:
        protocol.write_record_atomic(str(marker), protocol.make_record(
            stage=plan.name, lock=plan.lock_name, status=protocol.STATUS_FAILED, exit_code=record.exit_code or 1,
            program_exit_code=None, job_id=plan.env.get("NVIDIA_CLARA_JOBID", ""),
            job_name=plan.env.get("NVIDIA_CLARA_JOBNAME", ""), start_epoch=record.started or now, end_epoch=now,
            waited_s=None, failed_stage=plan.name, message=message))
        record.detail = message
        return
    except OSError as err:
        record.detail = f"{message}; cannot write {err.filename or marker}: {err.strerror or err}"
    owner = {p.lock_name: p.name for p in plans}
    below = runs.downstream_of(plan.name, [(owner[w], p.name) for p in plans for w in p.wait_names if w in owner])
    for name in sorted(below - {plan.name}):
        if name in pending and procs[name].poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(procs[name].pid, signal.SIGTERM)  # the runner writes `terminated` where it can
            other = records[name]
            other.status = protocol.STATUS_UPSTREAM_FAILED
            other.detail = f"stopped: upstream stage {plan.name} failed without a record"


def _root_cause(failed: List[StageRecord], plans: Dict[str, StagePlan]) -> Optional[StageRecord]:
    """The stage where the failure began: not one that only stopped because of it."""
    if not failed:
        return None
    own = [r for r in failed if r.status != protocol.STATUS_UPSTREAM_FAILED]
    return min(own or failed, key=lambda r: r.ended or 0)
