"""Runs of a workflow on a job: run ids, fresh outputs, the run record, reruns.

Engine-independent: every engine that runs a workflow on a job folder (local, container,
Kubernetes) uses these, so a run means the same everywhere.

- **Fresh outputs.** What a run generates under the job folder (each stage's output
  folders, ``locks/``, ``logs/``, ``run.json``) is found from the rendered pod spec
  (:func:`layout_from_pod`). At the start of a run, the previous run's generated files
  move to ``runs/<its run id>/`` under the job folder (the last ``keep`` runs are kept,
  plus the last successful one); the job's inputs are never touched.
- **The run record** ``run.json`` (:class:`RunRecord`): written atomically at the start
  (status ``running``) and at every state change.
- **Reruns** (``--from STAGE`` / ``--only STAGE``, :func:`plan_rerun`): the stages not
  rerun reuse the outputs of the last successful run, checked against the sizes and
  SHA-256 recorded for them, and copied back into the job folder.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from clara_wf import __version__
from clara_wf.errors import InputError
from clara_wf.payload import parse_paths

RUNS_DIR = "runs"
RECORD_NAME = "run.json"
RECORD_VERSION = 1
DEFAULT_KEEP = 3

# Overall statuses of a run.
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
INTERRUPTED = "interrupted"
TIMED_OUT = "timeout"
# Stage states in the record (the display's waiting/running/done/failed, plus these).
STAGE_WAITING = "waiting"
STAGE_RUNNING = "running"
STAGE_DONE = "done"
STAGE_FAILED = "failed"
STAGE_STOPPED = "stopped"
STAGE_REUSED = "reused"  # not run: outputs of an earlier run reused (--from/--only)
STAGE_SKIPPED = "skipped"  # not run and not needed (--only: downstream stages)


def new_run_id(now: Optional[float] = None) -> str:
    """Sortable by start time, unique enough for one job: ``20241202T040806Z-3fa1``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(2)}"


def iso(epoch: Optional[float]) -> Optional[str]:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec="milliseconds")


# --- what a run generates ----------------------------------------------------------------


@dataclass(frozen=True)
class JobLayout:
    """Where a workflow's stages read and write inside the job folder (paths relative to it)."""

    job_dir: Path
    stage_inputs: Dict[str, Tuple[str, ...]]
    stage_outputs: Dict[str, Tuple[str, ...]]
    shared: Tuple[str, ...]  # locks/, logs/
    payload_inputs: Tuple[str, ...]  # inputs no stage writes: the job's own data
    stage_locks: Dict[str, str] = field(default_factory=dict)  # stage -> its lock file (relative)
    stage_logs: Dict[str, str] = field(default_factory=dict)  # stage -> its log file (relative)

    def generated(self) -> List[str]:
        """What this workflow's runs write, shortest first; never an input or a folder holding one."""
        paths: Set[str] = set(self.shared) | {RECORD_NAME}
        for outs in self.stage_outputs.values():
            paths.update(outs)
        safe = [p for p in paths if not any(_within(i, p) for i in self.payload_inputs)]
        return sorted(safe, key=lambda p: (p.count("/"), p))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _clean_sub(sub: str) -> Optional[str]:
    parts = [p for p in PurePosixPath(sub).parts if p not in ("", ".", "/")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def layout_from_pod(pod: dict, job_dir: Path, stage_values: Optional[Mapping[str, dict]] = None) -> JobLayout:
    """Classify each container's payload mounts: inputs, outputs, the shared locks/logs.

    Inputs: the paths in NVIDIA_CLARA_INPUTPATHS (DAG form) or the stage's ``mount.in``
    folder (seed form). Shared: the mounts of LOCKDIR and of LOGNAME's folder. Outputs:
    every other mount with a subPath (a mount of the whole payload folder is neither).
    """
    stage_values = stage_values or {}
    inputs: Dict[str, Tuple[str, ...]] = {}
    outputs: Dict[str, Tuple[str, ...]] = {}
    shared: List[str] = []
    locks: Dict[str, str] = {}
    logs: Dict[str, str] = {}
    for container in pod.get("containers", []):
        name = container["name"]
        env = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
        app_dir = env.get("NVIDIA_CLARA_APPDIR") or "/app"
        if env.get("NVIDIA_CLARA_INPUTPATHS"):
            in_paths = [e.path for e in parse_paths(env["NVIDIA_CLARA_INPUTPATHS"])]
        else:
            mount_in = ((stage_values.get(name) or {}).get("mount") or {}).get("in") or {}
            in_paths = [f"{app_dir.rstrip('/')}/{mount_in.get('name', 'input')}"]
        lock_dir = env.get("NVIDIA_CLARA_LOCKDIR", "")
        log_dir = os.path.dirname(env.get("NVIDIA_CLARA_LOGNAME", "")) if env.get("NVIDIA_CLARA_LOGNAME") else ""
        ins, outs = [], []
        for mount in container.get("volumeMounts", []):
            sub = _clean_sub(str(mount.get("subPath", "")))
            if sub is None:
                continue
            path = str(mount["mountPath"]).rstrip("/") or "/"
            if path in (lock_dir.rstrip("/"), log_dir.rstrip("/")):
                if sub not in shared:
                    shared.append(sub)
                if path == lock_dir.rstrip("/") and env.get("NVIDIA_CLARA_LOCKNAME"):
                    locks[name] = f"{sub}/{env['NVIDIA_CLARA_LOCKNAME']}"
                if path == log_dir.rstrip("/"):
                    logs[name] = f"{sub}/{os.path.basename(env['NVIDIA_CLARA_LOGNAME'])}"
            elif any(_within(p, path) for p in in_paths):
                ins.append(sub)
            else:
                outs.append(sub)
        inputs[name], outputs[name] = tuple(ins), tuple(outs)
    written = {o for outs in outputs.values() for o in outs}
    payload = sorted({i for ins in inputs.values() for i in ins if i not in written})
    return JobLayout(job_dir=job_dir, stage_inputs=inputs, stage_outputs=outputs, shared=tuple(shared),
                     payload_inputs=tuple(payload), stage_locks=locks, stage_logs=logs)


# --- fresh outputs -----------------------------------------------------------------------


def read_record(path: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def archive_previous(layout: JobLayout, keep: int = DEFAULT_KEEP, clean: bool = False) -> Optional[str]:
    """Move the previous run's generated files to ``runs/<its id>/`` (or delete them with
    ``clean``); the id they went under, or None when there was nothing."""
    job_dir = layout.job_dir
    present: List[str] = []
    for rel in layout.generated():
        if any(_within(rel, done) for done in present):
            continue
        if os.path.lexists(job_dir / rel):
            present.append(rel)
    if not present:
        return None
    if clean:
        for rel in present:
            if (job_dir / rel).is_symlink() and (job_dir / rel).is_dir():
                for entry in (job_dir / rel).iterdir():
                    _remove(entry)
            else:
                _remove(job_dir / rel)
        return None
    previous = read_record(job_dir / RECORD_NAME) or {}
    run_id = str(previous.get("run_id") or "")
    if not run_id or "/" in run_id or run_id.startswith("."):
        # Files from before run ids (or a hand-made folder): named by when they were written.
        newest = max((os.lstat(job_dir / rel).st_mtime for rel in present), default=time.time())
        run_id = new_run_id(newest).replace("-", "-pre-", 1)
    dest = job_dir / RUNS_DIR / run_id
    while dest.exists():
        dest = dest.with_name(dest.name + "+")
    for rel in present:
        source, target = job_dir / rel, dest / rel
        if source.is_symlink() and source.is_dir():
            # A folder the user linked elsewhere (logs -> ...): the link stays, what the
            # previous run wrote through it moves.
            target.mkdir(parents=True, exist_ok=True)
            for entry in source.iterdir():
                os.rename(entry, target / entry.name)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)  # same file system: atomic per path, nothing copied
    prune(job_dir, keep)
    return dest.name


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def archived_runs(job_dir: Path) -> List[Tuple[str, Dict[str, Any]]]:
    """(run id, record) of the archived runs, oldest first."""
    folder = job_dir / RUNS_DIR
    found = []
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                found.append((entry.name, read_record(entry / RECORD_NAME) or {}))
    return found


def prune(job_dir: Path, keep: int) -> List[str]:
    """Keep the newest ``keep`` archived runs and the newest successful one; delete the rest."""
    runs = archived_runs(job_dir)
    successful = [rid for rid, rec in runs if rec.get("status") == SUCCEEDED]
    protected = set(rid for rid, _ in runs[-keep:]) if keep > 0 else set()
    if successful:
        protected.add(successful[-1])
    removed = []
    for rid, _ in runs:
        if rid not in protected:
            shutil.rmtree(job_dir / RUNS_DIR / rid, ignore_errors=True)
            removed.append(rid)
    return removed


# --- the record --------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_files(job_dir: Path, folders: Iterable[str]) -> List[Dict[str, Any]]:
    """Every regular file under the stage's output folders: path (relative to the job
    folder), size, SHA-256. Symbolic links are listed by target text, not followed."""
    files: List[Dict[str, Any]] = []
    for folder in folders:
        root = job_dir / folder
        if not root.exists():
            continue
        walk = [root] if root.is_file() else sorted(p for p in root.rglob("*"))
        for path in walk:
            rel = path.relative_to(job_dir).as_posix()
            if path.is_symlink():
                files.append({"path": rel, "symlink": os.readlink(path)})
            elif path.is_file():
                files.append({"path": rel, "size": path.stat().st_size, "sha256": sha256_of(path)})
    return files


def chart_version(chart_dir: Path) -> str:
    try:
        for line in (chart_dir / "Chart.yaml").read_text(encoding="utf-8").splitlines():
            if line.startswith("version:"):
                return line.split(":", 1)[1].strip().strip("'\"")
    except OSError:
        pass
    return ""


def write_json_atomic(path: Path, data: Dict[str, Any]) -> None:
    """Whole or not at all (fsio.atomic_write): a full disk leaves the previous file and no
    temporary file, and the error names ``path``."""
    from clara_wf import fsio

    try:
        fsio.atomic_write(path, json.dumps(data, indent=2) + "\n", durable=False, inside=path.parent)
    except OSError as err:
        if err.filename:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from None


def empty_stage(name: str) -> Dict[str, Any]:
    return {
        "stage": name,
        "state": STAGE_WAITING,
        "status": "",
        "detail": "",
        "exit_code": None,
        "attempts": [],
        "wait_s": None,
        "run_s": None,
        "start": None,
        "end": None,
        "log": None,
        "outputs": [],
    }


@dataclass
class RunRecord:
    """``run.json`` of one run; every change is written at once (atomically).

    Top level: record_version, run_id, workflow, job_id, job_name, engine,
    clara_wf_version, chart_version, start/end (ISO 8601 UTC) and their epochs,
    duration_s, status (running, succeeded, failed, timeout, interrupted), message,
    interrupted, mode (full, or from/only with the run reused), trtis_uri, stages (in
    workflow order). Per stage: state (waiting, running, done, failed, stopped, reused,
    skipped), the runner's status, detail, exit_code, attempts (the runner's, each with
    its exit code), wait_s, run_s, start, end, log (relative to the job folder) and
    outputs (path relative to the job folder, size, sha256).
    """

    path: Path
    data: Dict[str, Any]
    layout: Optional[JobLayout] = None

    @classmethod
    def start(cls, *, job_dir: Path, run_id: str, workflow: str, job_id: str, job_name: str, engine: str,
              stages: List[str], chart_dir: Optional[Path] = None, layout: Optional[JobLayout] = None,
              mode: Optional[Dict[str, Any]] = None, trtis_uri: Optional[str] = None,
              write: bool = True) -> "RunRecord":
        now = time.time()
        data: Dict[str, Any] = {
            "record_version": RECORD_VERSION,
            "run_id": run_id,
            "workflow": workflow,
            "job_id": job_id,
            "job_name": job_name,
            "engine": engine,
            "clara_wf_version": __version__,
            "chart_version": chart_version(chart_dir) if chart_dir else "",
            "start": iso(now),
            "start_epoch": now,
            "end": None,
            "end_epoch": None,
            "duration_s": None,
            "status": RUNNING,
            "message": "",
            "interrupted": False,
            "mode": mode or {"kind": "full"},
            "trtis_uri": trtis_uri,
            "stages": [empty_stage(name) for name in stages],
        }
        record = cls(path=job_dir / RECORD_NAME, data=data, layout=layout)
        if write:
            record.save()
        return record

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    def set(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def entry(self, name: str) -> Dict[str, Any]:
        for entry in self.data["stages"]:
            if entry["stage"] == name:
                return entry
        entry = empty_stage(name)
        self.data["stages"].append(entry)
        return entry

    def stage(self, name: str, **fields: Any) -> None:
        self.entry(name).update(fields)
        self.save()

    def stage_from_runner(self, name: str, runner: Optional[Dict[str, Any]], state: str, exit_code: Optional[int],
                          detail: str = "", hash_outputs: bool = True, **extra: Any) -> None:
        """Fill a stage's entry from its runner's lock or failure marker (docs/lock-protocol.md)."""
        runner = runner or {}
        entry: Dict[str, Any] = {"state": state, "exit_code": exit_code, "detail": detail or runner.get("message", "")}
        if runner:
            entry["status"] = runner.get("status", "")
            entry["attempts"] = runner.get("attempts") or []
            entry["wait_s"] = runner.get("waited_s")
            start, end = runner.get("start_epoch"), runner.get("end_epoch")
            if isinstance(start, (int, float)) and isinstance(end, (int, float)):
                entry["start"], entry["end"] = iso(start), iso(end)
                attempts = entry["attempts"]
                if attempts:
                    entry["run_s"] = round(sum(a.get("run_s") or 0 for a in attempts), 6)
                elif runner.get("program_exit_code") is not None:
                    entry["run_s"] = round(end - start, 6)
        entry.update(extra)
        if hash_outputs and self.layout is not None:
            entry["outputs"] = output_files(self.layout.job_dir, self.layout.stage_outputs.get(name, ()))
        self.stage(name, **entry)

    def finish(self, status: str, message: str) -> None:
        now = time.time()
        self.set(status=status, message=message, end=iso(now), end_epoch=now, interrupted=status == INTERRUPTED,
                 duration_s=round(now - self.data["start_epoch"], 6))


# --- reruns ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rerun:
    """Which stages run, and whose outputs are reused from which earlier run."""

    run: Tuple[str, ...]
    reuse: Tuple[str, ...]
    source_run_id: str
    source_dir: Path  # where that run's files are now (the job folder, or runs/<id>)
    source: Dict[str, Any]  # its record
    kind: str  # "from" or "only"
    stage: str

    def mode(self) -> Dict[str, Any]:
        return {"kind": self.kind, "stage": self.stage, "reused_from": self.source_run_id, "reused": list(self.reuse)}


def downstream_of(stage: str, edges: Iterable[Tuple[str, str]]) -> Set[str]:
    """``stage`` and every stage that depends on it, directly or not."""
    below: Dict[str, Set[str]] = {}
    for up, down in edges:
        below.setdefault(up, set()).add(down)
    found, todo = {stage}, [stage]
    while todo:
        for nxt in below.get(todo.pop(), ()):
            if nxt not in found:
                found.add(nxt)
                todo.append(nxt)
    return found


def last_successful_run(job_dir: Path, workflow: str) -> Optional[Tuple[str, Path, Dict[str, Any]]]:
    """(run id, folder holding its files, record) of the newest successful run of ``workflow``."""
    candidates: List[Tuple[str, Path, Dict[str, Any]]] = []
    current = read_record(job_dir / RECORD_NAME)
    if current and current.get("run_id"):
        candidates.append((str(current["run_id"]), job_dir, current))
    for rid, rec in archived_runs(job_dir):
        candidates.append((rid, job_dir / RUNS_DIR / rid, rec))
    good = [c for c in candidates if c[2].get("status") == SUCCEEDED and c[2].get("workflow") == workflow]
    if not good:
        return None
    return max(good, key=lambda c: c[2].get("start_epoch") or 0)


def plan_rerun(job_dir: Path, workflow: str, stages: List[str], edges: Iterable[Tuple[str, str]],
               from_stage: Optional[str] = None, only_stage: Optional[str] = None) -> Rerun:
    """Check that a rerun can reuse what it needs; InputError (one line) when it cannot."""
    stage = from_stage or only_stage
    assert stage is not None
    option = "--from" if from_stage else "--only"
    if stage not in stages:
        raise InputError(f"{option} {stage}: workflow '{workflow}' has no stage {stage!r} (stages: {', '.join(stages)})")
    run = downstream_of(stage, edges) if from_stage else {stage}
    reuse = [s for s in stages if s not in run and (from_stage or s not in downstream_of(stage, edges))]
    found = last_successful_run(job_dir, workflow)
    if found is None:
        raise InputError(f"{option} {stage}: no successful run of workflow '{workflow}' on this job to reuse "
                         "outputs from; run the whole workflow first")
    run_id, folder, record = found
    recorded = stages_by_name(record)
    for name in reuse:
        entry = recorded.get(name)
        if not isinstance(entry, dict) or entry.get("state") not in (STAGE_DONE, STAGE_REUSED):
            raise InputError(f"{option} {stage}: run {run_id} has no successful result of stage {name} to reuse")
        for out in entry.get("outputs") or []:
            path = folder / str(out.get("path", ""))
            if "symlink" in out:
                if not path.is_symlink() or os.readlink(path) != out["symlink"]:
                    raise InputError(f"{option} {stage}: {path} (output of {name} in run {run_id}) changed since it "
                                     "was recorded; run the whole workflow")
                continue
            if not path.is_file():
                raise InputError(f"{option} {stage}: {path} (output of {name} in run {run_id}) is missing; "
                                 "run the whole workflow")
            if path.stat().st_size != out.get("size") or sha256_of(path) != out.get("sha256"):
                raise InputError(f"{option} {stage}: {path} (output of {name} in run {run_id}) changed since it "
                                 "was recorded (size or SHA-256 differs); run the whole workflow")
    return Rerun(run=tuple(s for s in stages if s in run), reuse=tuple(reuse), source_run_id=run_id,
                 source_dir=folder, source=record, kind="from" if from_stage else "only", stage=stage)


def restore_reused(rerun: Rerun, layout: JobLayout, source_dir: Path) -> None:
    """Copy the reused stages' output folders from ``source_dir`` into the job folder."""
    for name in rerun.reuse:
        for rel in layout.stage_outputs.get(name, ()):
            src, dst = source_dir / rel, layout.job_dir / rel
            if not os.path.lexists(src):
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir() and not src.is_symlink():
                shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dst, follow_symlinks=False)


def stages_by_name(record: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    stages = record.get("stages") or []
    if isinstance(stages, dict):
        return stages
    return {str(s.get("stage")): s for s in stages if isinstance(s, dict)}


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare_job` did before a run's stages start."""

    layout: JobLayout
    archived_as: Optional[str]  # the previous run's files went to runs/<this>
    reused: Dict[str, Dict[str, Any]]  # stage -> its entry in the run it was reused from


def prepare_job(layout: JobLayout, run_id: str, job_id: str, rerun: Optional[Rerun] = None,
                keep: int = DEFAULT_KEEP, clean: bool = False) -> Prepared:
    """Give the run a job folder with only its own files: move (or delete) the previous
    run's, then, for a rerun, copy back the reused stages' outputs and write their locks
    (so that the stages run now find their upstream done, as in the run reused)."""
    from clara_wf.runner import protocol

    archived = archive_previous(layout, keep=keep, clean=clean)
    reused: Dict[str, Dict[str, Any]] = {}
    if rerun is not None:
        source = rerun.source_dir
        if source == layout.job_dir:  # it was the previous run: its files just moved
            assert archived is not None
            source = layout.job_dir / RUNS_DIR / archived
        restore_reused(rerun, layout, source)
        recorded = stages_by_name(rerun.source)
        now = time.time()
        for name in rerun.reuse:
            reused[name] = recorded.get(name) or {}
            lock = layout.stage_locks.get(name)
            if lock:
                path = layout.job_dir / lock
                path.parent.mkdir(parents=True, exist_ok=True)
                protocol.write_record_atomic(str(path), protocol.make_record(
                    stage=name, lock=path.name, status=protocol.STATUS_SUCCEEDED, exit_code=0, program_exit_code=0,
                    job_id=job_id, job_name="", start_epoch=now, end_epoch=now, waited_s=0.0,
                    message=f"reused from run {rerun.source_run_id}"))
    return Prepared(layout=layout, archived_as=archived, reused=reused)


# --- reading runs back (logs, summaries) -------------------------------------------------


def find_run(job_dir: Path, run_id: Optional[str] = None, workflow: Optional[str] = None) -> Tuple[Path, Dict[str, Any]]:
    """(folder holding the run's files, its record): ``run_id``, or the newest run (of ``workflow``)."""
    candidates: List[Tuple[Path, Dict[str, Any]]] = []
    current = read_record(job_dir / RECORD_NAME)
    if current is not None:
        candidates.append((job_dir, current))
    for rid, rec in archived_runs(job_dir):
        candidates.append((job_dir / RUNS_DIR / rid, {**rec, "run_id": rec.get("run_id") or rid}))
    if run_id is not None:
        for folder, rec in candidates:
            if rec.get("run_id") == run_id or folder.name == run_id:
                return folder, rec
        known = ", ".join(str(rec.get("run_id")) for _, rec in candidates) or "none"
        raise InputError(f"no run {run_id!r} in {job_dir} (runs: {known})")
    if workflow is not None:
        candidates = [c for c in candidates if c[1].get("workflow") == workflow]
    if not candidates:
        what = f" of workflow '{workflow}'" if workflow else ""
        raise InputError(f"no run{what} in {job_dir}: `clara-wf test` records one")
    return max(candidates, key=lambda c: c[1].get("start_epoch") or 0)


def summary_rows(record: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per stage for the end-of-run table."""
    rows = []
    for name, entry in stages_by_name(record).items():
        outputs = entry.get("outputs") or []
        rows.append({
            "stage": name,
            "status": entry.get("state", ""),
            "attempts": len(entry.get("attempts") or []),
            "wait_s": entry.get("wait_s"),
            "run_s": entry.get("run_s"),
            "outputs": len(outputs),
            "bytes": sum(o.get("size") or 0 for o in outputs),
        })
    return rows


def relative_to_job(job_dir: Path, path: Optional[Path]) -> Optional[str]:
    """A path inside the job folder as the record keeps it (relative: it moves with the run)."""
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(job_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


def stage_logs(job_dir: Path, run_id: Optional[str] = None, workflow: Optional[str] = None,
               stage: Optional[str] = None) -> Tuple[Dict[str, Any], List[Tuple[str, Path]]]:
    """The run's record and (stage, log file) of each of its stages (or of ``stage``)."""
    folder, record = find_run(job_dir, run_id, workflow)
    stages = stages_by_name(record)
    if stage is not None and stage not in stages:
        raise InputError(f"run {record.get('run_id')} has no stage {stage!r} (stages: {', '.join(stages) or 'none'})")
    found = []
    for name, entry in stages.items():
        if stage is not None and name != stage:
            continue
        log = entry.get("log") if isinstance(entry, dict) else None
        if log:
            path = Path(log)
            found.append((name, path if path.is_absolute() else folder / path))
    return record, found


def merged_log_lines(logs: List[Tuple[str, Path]], offsets: Optional[Dict[str, int]] = None) -> List[str]:
    """New lines of each log since ``offsets`` (updated), ordered by their time stamps; with
    several logs each line is prefixed with its stage."""
    offsets = offsets if offsets is not None else {}
    width = max((len(name) for name, _ in logs), default=0)
    lines: List[Tuple[str, int, str]] = []
    for order, (name, path) in enumerate(logs):
        try:
            with open(path, "rb") as f:
                f.seek(offsets.get(name, 0))
                data = f.read()
        except FileNotFoundError:
            continue
        end = data.rfind(b"\n") + 1  # a line still being written waits for its end
        offsets[name] = offsets.get(name, 0) + end
        for raw in data[:end].decode("utf-8", "replace").splitlines():
            text = f"{name:>{width}} | {raw}" if len(logs) > 1 else raw
            lines.append((raw[:24], order, text))
    if len(logs) > 1:
        lines.sort(key=lambda item: (item[0], item[1]))  # stable: a stage's own order is kept
    return [text for _, _, text in lines]
