"""What the adapter keeps on disk, so that a restart loses nothing it acknowledged.

Layout of the state folder::

    adapter.lock                      one adapter per state folder (flock, holder's pid inside)
    groups/GID.json                   an open group: key, caller, the job ids it will become
    groups/GID/PATIENT/STUDY/SERIES/SOP.dcm   received instances, as sent (file meta + raw data set)
    jobs/JOB.json                     one record per job: state, study, workflow, times, exports
    payloads/JOB/<dicomAdapter.input>/PATIENT/STUDY/SERIES/SOP.dcm   the job's payload (hard links)

An instance is written to a temporary file, fsynced, linked to its final name (which
fails if the SOP Instance UID is already there: a duplicate is stored once) and its
folder fsynced, all before the C-STORE status goes back. Records are replaced
atomically (write, fsync, rename, fsync the folder). Closing a group is idempotent, so a
crash half-way through is finished on restart.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from clara_wf import fsio
from clara_wf.errors import InputError

RECEIVING, QUEUED, RUNNING, EXPORTING, DONE, FAILED = "receiving", "queued", "running", "exporting", "done", "failed"
JOB_STATES = (RECEIVING, QUEUED, RUNNING, EXPORTING, DONE, FAILED)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_uid(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(_UID.match(value))


def safe_name(value: object, fallback: str = "unknown") -> str:
    """A patient id (any text) as one folder name: no separators, no dot-names."""
    text = _SAFE.sub("_", str(value or "")).strip("._")[:64]
    return text or fallback


def _makedirs_durable(path: Path, root: Path) -> None:
    """Create path (below root) and fsync each parent whose entries changed."""
    missing = []
    p = path
    while not p.exists() and p != root and root in p.parents:
        missing.append(p)
        p = p.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
        fsio.fsync_dir(folder.parent)


def write_new_durable(path: Path, data: bytes) -> bool:
    """Create a file whole and durably, unless it exists (then False): fsio.atomic_write's
    steps with a no-clobber link instead of a replacing rename, so that two associations
    storing the same SOP Instance UID at once keep one file."""
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsio.fsync_dir(path.parent)
    return True


def write_json_durable(path: Path, record: dict) -> None:
    fsio.atomic_write(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


class Store:
    """The adapter's state folder. Thread-safe for one process; ``lock()`` keeps other processes out."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.groups_dir = self.root / "groups"
        self.jobs_dir = self.root / "jobs"
        self.payloads_dir = self.root / "payloads"
        self._lock = threading.RLock()
        self._held: Optional[contextlib.ExitStack] = None

    # --- the folder and its lock ----------------------------------------------------

    def create(self) -> None:
        for folder in (self.groups_dir, self.jobs_dir, self.payloads_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def lock(self) -> None:
        """One adapter per state folder: a second one is refused with the first one's pid."""
        self.create()
        stack = contextlib.ExitStack()
        try:
            fd = stack.enter_context(fsio.lock(self.root / "adapter.lock", blocking=False, create=True))
        except BlockingIOError:
            holder = (self.root / "adapter.lock").read_text(errors="replace").strip() or "?"
            raise InputError(f"another DICOM adapter (pid {holder}) uses {self.root}; stop it or pick another --state-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._held = stack

    def unlock(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    # --- jobs -------------------------------------------------------------------------

    def job_path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id}.json"

    def payload_dir(self, job_id: str) -> Path:
        return self.payloads_dir / job_id

    def write_job(self, record: dict) -> None:
        with self._lock:
            write_json_durable(self.job_path(record["id"]), record)

    def update_job(self, job_id: str, **fields) -> dict:
        with self._lock:
            record = self.read_job(job_id)
            record.update(fields)
            self.write_job(record)
            return record

    def read_job(self, job_id: str) -> dict:
        path = self.job_path(job_id)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"no job {job_id} in {self.jobs_dir}") from None

    def jobs(self) -> List[dict]:
        """Every job, oldest first (unreadable records are skipped, never fatal for a listing)."""
        records: List[dict] = []
        if not self.jobs_dir.is_dir():
            return records
        for path in self.jobs_dir.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                records.append(json.loads(path.read_text()))
        return sorted(records, key=lambda r: (r.get("created", 0), r.get("id", "")))

    def find_job(self, prefix: str) -> dict:
        """A job by its id or an unambiguous prefix of it."""
        if not prefix or not re.fullmatch(r"[0-9a-fA-F-]{1,36}", prefix):
            raise InputError(f"{prefix!r} is not a job id (a UUID or the start of one)")
        matches = [p.stem for p in self.jobs_dir.glob(f"{prefix.lower()}*.json")] if self.jobs_dir.is_dir() else []
        if not matches:
            raise InputError(f"no job {prefix} in {self.jobs_dir}")
        if len(matches) > 1:
            raise InputError(f"{prefix} matches {len(matches)} jobs: give more of the id")
        return self.read_job(matches[0])

    # --- groups -----------------------------------------------------------------------

    def open_group(self, *, called_ae: str, grouping: str, uid: str, calling_ae: str, calling_host: str,
                   workflows: List[str], input_folder: str, output_folder: str) -> dict:
        """A new group and the jobs (one per workflow, state receiving) it will become."""
        gid = uuid.uuid4().hex
        now = time.time()
        group: Dict[str, Any] = {
            "id": gid, "called_ae": called_ae, "grouping": grouping, "uid": uid, "calling_ae": calling_ae,
            "calling_host": calling_host, "created": now, "jobs": {w: str(uuid.uuid4()) for w in workflows},
            "input_folder": input_folder, "output_folder": output_folder,
        }
        with self._lock:
            for workflow, job_id in group["jobs"].items():
                self.write_job({
                    "id": job_id, "state": RECEIVING, "workflow": workflow, "group": gid, "called_ae": called_ae,
                    "calling_ae": calling_ae, "calling_host": calling_host, "grouping": grouping, "uid": uid,
                    "study_uid": uid if grouping == "StudyInstanceUID" else "", "created": now,
                    "payload": str(self.payload_dir(job_id)), "input_folder": input_folder,
                    "output_folder": output_folder, "instances": 0, "bytes": 0, "exports": {},
                })
            (self.groups_dir / gid).mkdir(parents=True, exist_ok=True)
            write_json_durable(self.groups_dir / f"{gid}.json", group)
        return group

    def instance_path(self, group: dict, patient_id: str, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return self.groups_dir / group["id"] / safe_name(patient_id) / study_uid / series_uid / f"{sop_uid}.dcm"

    def store_instance(self, path: Path, data: bytes) -> bool:
        """Keep one instance durably; False when that SOP Instance UID is already stored (kept once)."""
        if path.exists():
            return False
        _makedirs_durable(path.parent, self.groups_dir)
        return write_new_durable(path, data)

    def open_groups(self) -> List[dict]:
        """Groups not yet closed (after a restart: resume them). Stray temporary files are dropped."""
        groups = []
        for path in sorted(self.groups_dir.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                group = json.loads(path.read_text())
                for tmp in (self.groups_dir / group["id"]).rglob(".tmp-*"):
                    tmp.unlink()
                groups.append(group)
        return groups

    def group_instances(self, group: dict) -> Iterator[Path]:
        folder = self.groups_dir / group["id"]
        return (p for p in folder.rglob("*.dcm") if not p.name.startswith(".tmp-")) if folder.is_dir() else iter(())

    def close_group(self, group: dict) -> List[str]:
        """Hand a quiet group to its jobs: link its files into each job's input folder, mark
        the jobs queued, forget the group. Safe to repeat after a crash at any step."""
        folder = self.groups_dir / group["id"]
        files = sorted(self.group_instances(group))
        size = sum(p.stat().st_size for p in files)
        queued = []
        for job_id in group["jobs"].values():
            target_root = self.payload_dir(job_id) / group["input_folder"]
            for src in files:
                dst = target_root / src.relative_to(folder)
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dst)
                except FileExistsError:
                    pass
                except OSError as err:  # another file system (a mounted payload volume): copy
                    if err.errno != errno.EXDEV:
                        raise
                    shutil.copy2(src, dst)
            touched = {target_root / src.relative_to(folder).parent for src in files}
            for d in set(touched) | {a for t in touched for a in t.parents if self.payloads_dir in a.parents}:
                fsio.fsync_dir(d)
            with self._lock:
                record = self.read_job(job_id)
                if record["state"] == RECEIVING:
                    record.update(state=QUEUED, instances=len(files), bytes=size, queued=time.time(),
                                  series=sorted({p.parent.name for p in files}),
                                  patient=sorted({p.relative_to(folder).parts[0] for p in files}))
                    self.write_job(record)
            queued.append(job_id)
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                (self.groups_dir / f"{group['id']}.json").unlink()
            fsio.fsync_dir(self.groups_dir)
            shutil.rmtree(folder, ignore_errors=True)
        return queued

    def count_received(self, job: dict) -> int:
        """Instances so far of a job still receiving (its group's files)."""
        return sum(1 for _ in self.group_instances({"id": job.get("group", "")})) if job.get("group") else 0


def pending(records: List[dict]) -> Dict[str, List[dict]]:
    """Jobs to resume after a restart, by what they still need."""
    out: Dict[str, List[dict]] = {QUEUED: [], RUNNING: [], EXPORTING: []}
    for record in records:
        if record.get("state") in out:
            out[record["state"]].append(record)
    return out
