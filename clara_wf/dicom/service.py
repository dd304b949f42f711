"""The adapter at work: groups of received instances become jobs, jobs run, results go out.

Threads: the SCP's association threads call ``receive``; one timer thread closes groups
that have been quiet for their inactivity timeout; ``max_concurrent_jobs`` worker
threads run jobs and export their results. Every state change is written to the store
before it is acted on, so ``start()`` after a crash resumes open groups, queued and
interrupted jobs and unfinished exports.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from clara_wf.dicom import store as st
from clara_wf.dicom.config import AdapterConfig, backoff
from clara_wf.errors import ClaraWfError
from clara_wf.events import FAILED as STAGE_FAILED
from clara_wf.events import Event, StageUpdate
from clara_wf.project import Project

if TYPE_CHECKING:
    from clara_wf.dicom.scp import StorageSCP

TICK_S = 0.05


@dataclass
class OpenGroup:
    record: dict
    timeout: float
    last: float = field(default_factory=time.monotonic)
    last_wall: float = field(default_factory=time.time)
    writers: int = 0  # instances being written right now: never close under them
    count: int = 0
    bytes: int = 0
    callers: set = field(default_factory=set)


class Adapter:
    """One adapter process: an SCP, its groups, its job workers."""

    def __init__(self, project: Project, config: AdapterConfig, store: st.Store, *, log: Callable[[str], None],
                 job_timeout: float = 3600,
                 namespace: str = "default", kube_context: Optional[str] = None,
                 payloads_host_path: Optional[str] = None):
        from clara_wf.dicom import jobrun

        self.project = project
        self.config = config
        self.store = store
        self.log = log
        self.job_timeout = job_timeout
        self.namespace = namespace
        self.kube_context = kube_context
        self.payloads_host_path = payloads_host_path  # where the workflow's pods find store.payloads_dir
        self.input_folder, self.output_folder = jobrun.adapter_folders(project)
        self._groups: Dict[Tuple[str, str], OpenGroup] = {}
        self._lock = threading.Lock()
        self._jobs: "queue.Queue[Optional[str]]" = queue.Queue()
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self.scp: Optional["StorageSCP"] = None
        self.engine = config.engine

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> int:
        """Lock the state folder, resume what a previous run left, open the port; the port."""
        from clara_wf.dicom.scp import StorageSCP

        self.store.lock()
        if self.engine == "auto":  # decided once, not probed again for every study
            from clara_wf import engines

            self.engine, why = engines.choose_engine(engines.AUTO, self.kube_context)
            self.log(f"engine: {self.engine} ({why})")
        self._resume()
        self._spawn(self._close_quiet_groups, "groups")
        for n in range(self.config.max_concurrent_jobs):
            self._spawn(self._work, f"jobs-{n}")
        scp = self.scp = StorageSCP(self.config, self.receive, self.log)
        scp.start()
        return scp.port

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=f"dicom-adapter-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, wait: float = 5.0) -> None:
        """Stop taking associations and jobs; what is on disk is resumed by the next start."""
        if self.scp is not None:
            self.scp.stop()
        self._stop.set()
        for _ in range(self.config.max_concurrent_jobs):
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=wait)
        self.store.unlock()

    def _resume(self) -> None:
        for group in self.store.open_groups():
            ae = self.config.called.get(group["called_ae"])
            timeout = ae.timeout if ae else 0.0
            opened = OpenGroup(record=group, timeout=timeout,
                               count=sum(1 for _ in self.store.group_instances(group)))
            self._groups[(group["called_ae"], group["uid"])] = opened
            self.log(f"resuming group {group['grouping']} {group['uid']} from {group['calling_ae']} "
                     f"({opened.count} instances kept): jobs {', '.join(group['jobs'].values())}")
        pending = st.pending(self.store.jobs())
        for state in (st.EXPORTING, st.RUNNING, st.QUEUED):
            for record in pending[state]:
                self.log(f"resuming job {record['id']} ({state}, workflow {record['workflow']})")
                self._jobs.put(record["id"])

    # --- receiving ----------------------------------------------------------------------

    def receive(self, peer, *, sop_uid: str, study_uid: str, series_uid: str, patient_id: str, data: bytes) -> bool:
        """Keep one instance (durably) in its group; False when it was already there."""
        ae = self.config.called[peer.called_ae]
        uid = study_uid if ae.grouping == "StudyInstanceUID" else series_uid
        key = (peer.called_ae, uid)
        with self._lock:
            group = self._groups.get(key)
            if group is None:
                record = self.store.open_group(
                    called_ae=peer.called_ae, grouping=ae.grouping, uid=uid, calling_ae=peer.calling_ae,
                    calling_host=peer.host, workflows=list(ae.workflows), input_folder=self.input_folder,
                    output_folder=self.output_folder)
                group = self._groups[key] = OpenGroup(record=record, timeout=ae.timeout)
                self.log(f"new {ae.grouping} {uid} from {peer.calling_ae}@{peer.host} to {peer.called_ae}: "
                         + ", ".join(f"job {j} ({w})" for w, j in record["jobs"].items()))
            group.writers += 1
        stored = False
        try:
            path = self.store.instance_path(group.record, patient_id, study_uid, series_uid, sop_uid)
            stored = self.store.store_instance(path, data)
        finally:
            with self._lock:
                group.writers -= 1
                group.last, group.last_wall = time.monotonic(), time.time()
                group.callers.add(f"{peer.calling_ae}@{peer.host}")
                if stored:
                    group.count += 1
                    group.bytes += len(data)
        return stored

    def _close_quiet_groups(self) -> None:
        while not self._stop.wait(TICK_S):
            now = time.monotonic()
            with self._lock:
                quiet = [(k, g) for k, g in self._groups.items() if not g.writers and now - g.last >= g.timeout]
                for key, _ in quiet:
                    del self._groups[key]
            for _, group in quiet:
                try:
                    self._close(group)
                except Exception as err:  # keep the group on disk: the next start retries it
                    self.log(f"could not hand group {group.record['uid']} to its jobs: {type(err).__name__}: {err}")

    def _close(self, group: OpenGroup) -> None:
        record = group.record
        job_ids = self.store.close_group(record)
        for job_id in job_ids:
            self.store.update_job(job_id, received_last=group.last_wall)
        callers = ", ".join(sorted(group.callers)) or record["calling_ae"]
        self.log(f"{record['grouping']} {record['uid']} complete: {group.count} instances "
                 f"({group.bytes / 1e6:.2f} MB) from {callers} -> "
                 + ", ".join(f"job {j} queued (workflow {w})" for w, j in record["jobs"].items()))
        for job_id in job_ids:
            self._jobs.put(job_id)

    # --- jobs ---------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            job_id = self._jobs.get()
            if job_id is None:
                return
            try:
                self.process(job_id)
            except Exception as err:  # one job's bug must not stop the worker: record it
                self.log(f"job {job_id} failed: internal error: {type(err).__name__}: {err}")
                self.store.update_job(job_id, state=st.FAILED, ended=time.time(),
                                      message=f"internal error: {type(err).__name__}: {err}")

    def process(self, job_id: str) -> None:
        record = self.store.read_job(job_id)
        if record["state"] in (st.QUEUED, st.RUNNING):
            if not self._run(record):
                return
            record = self.store.read_job(job_id)
        if record["state"] == st.EXPORTING:
            self._export(record)

    def _run(self, record: dict) -> bool:
        from clara_wf.dicom import jobrun

        job_id = record["id"]
        payload = Path(record["payload"])
        output = payload / record["output_folder"]
        if output.exists():  # left by an interrupted run: the result must be this run's
            shutil.rmtree(output)
        if record["state"] == st.RUNNING:  # interrupted mid-run by a crash or a stop: clear what it left
            try:
                if jobrun.clear_interrupted(job_id, record.get("engine") or self.engine, namespace=self.namespace,
                                            kube_context=self.kube_context):
                    self.log(f"job {job_id}: removed release {jobrun.release_name(job_id)} left by the interrupted run")
            except ClaraWfError as err:
                self.log(f"job {job_id}: could not remove what the interrupted run left: {err}")
        record = self.store.update_job(job_id, state=st.RUNNING, started=time.time(), engine=self.engine)
        self.log(f"job {job_id}: running workflow {record['workflow']} ({self.engine} engine) on "
                 f"{record['instances']} instances")
        t0 = time.monotonic()
        try:
            result = jobrun.run_job(
                self.project, record["workflow"], job_id, payload_root=self.store.payloads_dir,
                input_folder=record["input_folder"], output_folder=record["output_folder"],
                job_name=f"DICOM {record['grouping']} {record['uid']}"[:63], engine=self.engine,
                timeout=self.job_timeout, on_event=lambda event: self._stage_event(job_id, event),
                namespace=self.namespace, kube_context=self.kube_context, host_payload_root=self.payloads_host_path,
                trtis_uri=self.config.trtis_uri)
            ok = result.succeeded
            message = str(result.outcome.message or "") if result.outcome else "the workflow did not run"
        except ClaraWfError as err:
            ok, message = False, str(err)
        seconds = time.monotonic() - t0
        run_record = payload / "run.json"
        extra = {"run_seconds": round(seconds, 3), "run_record": str(run_record) if run_record.exists() else ""}
        if not ok:
            self.store.update_job(job_id, state=st.FAILED, ended=time.time(), message=message, **extra)
            self.log(f"job {job_id}: workflow {record['workflow']} failed after {seconds:.1f} s: {message}")
            return False
        from clara_wf.dicom.export import dicom_files

        files = dicom_files(output)
        self.log(f"job {job_id}: workflow {record['workflow']} succeeded in {seconds:.1f} s; "
                 f"{len(files)} DICOM files in {output}")
        ae = self.config.called.get(record["called_ae"])
        destinations = list(ae.destinations) if ae else []
        exports = {name: {"destination": self.config.destinations[name].describe(), "state": "pending",
                          "attempts": 0, "sent": [], "failed": [], "message": ""} for name in destinations}
        state = st.EXPORTING if destinations and files else st.DONE
        message = "" if files or not destinations else f"nothing to export: no DICOM file in {output}"
        self.store.update_job(job_id, state=state, exports=exports, files=[str(f.relative_to(output)) for f in files],
                              message=message, **({"ended": time.time()} if state == st.DONE else {}), **extra)
        return True

    def _stage_event(self, job_id: str, event: Event) -> None:
        if isinstance(event, StageUpdate) and event.state in ("done", STAGE_FAILED):
            detail = f": {event.detail}" if event.detail and event.state == STAGE_FAILED else ""
            self.log(f"job {job_id}: stage {event.stage} {event.state}{detail}")

    def _export(self, record: dict) -> None:
        from clara_wf.dicom.export import dicom_files, send

        job_id = record["id"]
        output = Path(record["payload"]) / record["output_folder"]
        files = dicom_files(output)
        exports = record.get("exports") or {}
        waits = backoff(self.config.retries, self.config.retry_delay)
        for name, result in exports.items():
            if result["state"] == "done":
                continue
            destination = self.config.destinations.get(name)
            if destination is None:
                result.update(state="failed", message=f"destination {name!r} is no longer configured")
                self.store.update_job(job_id, exports=exports)
                continue
            while True:
                todo = [f for f in files if str(f.relative_to(output)) not in result["sent"]]
                outcome = send(destination, todo, calling_ae=self.config.scu_ae_title, root=output)
                result["attempts"] += 1
                result["sent"] = sorted(set(result["sent"]) | set(outcome.sent))
                result["failed"] = outcome.failed
                result["message"] = outcome.message
                result["last_attempt"] = time.time()
                if outcome.ok:
                    result["state"] = "done"
                    self.store.update_job(job_id, exports=exports)
                    self.log(f"job {job_id}: sent {len(result['sent'])} files to {name} ({destination.describe()})")
                    break
                retry = result["attempts"] - 1
                if retry >= len(waits) or self._stop.is_set():
                    result["state"] = "failed"
                    self.store.update_job(job_id, exports=exports)
                    self.log(f"job {job_id}: export to {name} failed after {result['attempts']} attempts: "
                             f"{outcome.message}")
                    break
                result["state"] = "retrying"
                self.store.update_job(job_id, exports=exports)
                self.log(f"job {job_id}: export to {name} failed ({outcome.message}); retry in {waits[retry]:g} s")
                if self._stop.wait(waits[retry]):
                    return  # stopping: the next start resumes this export
        failed = [n for n, r in exports.items() if r["state"] != "done"]
        if failed:
            message = "; ".join(f"export to {n} failed: {exports[n]['message']}" for n in failed)
            self.store.update_job(job_id, state=st.FAILED, ended=time.time(), message=message, exports=exports)
        else:
            self.store.update_job(job_id, state=st.DONE, ended=time.time(), exports=exports)
