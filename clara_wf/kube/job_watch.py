"""Following a Job to its end: its pod's container statuses become ``StageUpdate`` events, each
container's log is followed once it starts, image-pull errors end the run at once."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

from clara_wf.errors import ClusterError
from clara_wf.events import DONE, FAILED, RUNNING, WAITING, Event, Info, JobOutcome, LogLine, StageUpdate
from clara_wf.kube.client import FATAL_WAITING_REASONS, fatal_message
from clara_wf.kube.config import CONNECT_TIMEOUT
from clara_wf.kube.errors import one_line
from clara_wf.kube.logs import LogEnded, LogNote, LogText, follow_log, shutdown_response
from clara_wf.kube.watch import Changed, Listed, Watcher, WatchFailed, WatchNote

if TYPE_CHECKING:
    from clara_wf.kube.client import Kube

Item = Union[Listed, Changed, WatchNote, WatchFailed, LogText, LogNote, LogEnded]


@dataclass
class ContainerLog:
    thread: threading.Thread
    stop: threading.Event
    holder: Dict[str, Any]


def job_state(job: Any) -> Optional[Tuple[bool, str]]:
    """(succeeded, message) once the Job has a terminal condition, else None."""
    status = getattr(job, "status", None)
    if status is None:
        return None
    for cond in status.conditions or []:
        if str(cond.status) != "True":
            continue
        if cond.type in ("Complete", "SuccessCriteriaMet"):
            return True, "the Job completed"
        if cond.type in ("Failed", "FailureTarget"):
            detail = ": ".join(x for x in (cond.reason, one_line(cond.message or "")) if x)
            return False, "the Job failed" + (f" ({detail})" if detail else "")
    return None


class JobWatch:
    def __init__(self, kube: "Kube", job_name: str, *, stages: Optional[List[str]], timeout: float,
                 on_event: Callable[[Event], None], stream_logs: bool, watch_server_timeout: int,
                 job_condition_grace: float, log_drain_timeout: float) -> None:
        self.kube = kube
        self.job_name = job_name
        self.stage_order: List[str] = list(stages or [])
        self.fixed_stages = bool(stages)
        self.timeout = timeout
        self.on_event = on_event
        self.stream_logs = stream_logs
        self.watch_server_timeout = watch_server_timeout
        self.job_condition_grace = job_condition_grace
        self.log_drain_timeout = log_drain_timeout
        self.q: "queue.Queue[Item]" = queue.Queue()
        self.stop = threading.Event()
        self.pods: Dict[str, Any] = {}
        self.current_pod: Optional[str] = None
        self.states: Dict[str, StageUpdate] = {}
        self.logs: Dict[Tuple[str, str], ContainerLog] = {}
        self.failed_stage: Optional[str] = None
        self.infos_sent: set = set()

    # --------------------------------------------------------------- plumbing

    def _info(self, text: str, once: bool = True) -> None:
        if once and text in self.infos_sent:
            return
        self.infos_sent.add(text)
        self.on_event(Info(text))

    def _emit_stage(self, update: StageUpdate) -> None:
        if self.states.get(update.stage) == update:
            return
        if update.stage not in self.stage_order:
            self.stage_order.append(update.stage)
        self.states[update.stage] = update
        if update.state == FAILED and self.failed_stage is None:
            self.failed_stage = update.stage
        self.on_event(update)

    def _start_log(self, pod: str, container: str) -> None:
        if not self.stream_logs or (pod, container) in self.logs:
            return
        stop = threading.Event()
        holder: Dict[str, Any] = {}
        thread = threading.Thread(
            target=follow_log,
            args=(self.kube.core, self.kube.namespace, pod, container, self.q, stop, holder),
            name=f"clara-wf-log-{container}",
            daemon=True,
        )
        self.logs[(pod, container)] = ContainerLog(thread, stop, holder)
        thread.start()

    def _stop_logs(self) -> None:
        for log in self.logs.values():
            log.stop.set()
            resp = log.holder.get("resp")
            if resp is not None:
                shutdown_response(resp)

    # --------------------------------------------------------------- pods

    def _pick_current_pod(self) -> None:
        live = [p for p in self.pods.values() if p is not None]
        if not live:
            self.current_pod = None
            return

        def created(p: Any) -> Any:
            ts = p.metadata.creation_timestamp
            return (ts.timestamp() if ts is not None else 0.0, p.metadata.name)

        self.current_pod = max(live, key=created).metadata.name

    def _on_pod(self, pod: Any) -> Optional[Tuple[bool, str]]:
        """Turn a pod's container statuses into stage events; a fail-fast outcome or None."""
        name = pod.metadata.name
        images = {c.name: c.image for c in (pod.spec.containers or [])} if pod.spec else {}
        if not self.fixed_stages:
            for c in images:
                if c not in self.stage_order:
                    self.stage_order.append(c)
        statuses = {cs.name: cs for cs in ((pod.status.container_statuses or []) if pod.status else [])}
        phase = (pod.status.phase if pod.status else None) or "Pending"
        pending_detail = "pod " + phase
        for cond in (pod.status.conditions or []) if pod.status else []:
            if cond.type == "PodScheduled" and str(cond.status) == "False" and cond.reason:
                pending_detail = f"{cond.reason}: {one_line(cond.message or '')}".rstrip(": ")
                self._info(f"pod {name} is not scheduled yet ({pending_detail})")
        for stage in self.stage_order:
            if stage not in images:
                continue
            cs = statuses.get(stage)
            image = images.get(stage) or (cs.image if cs else "?")
            if cs is None or cs.state is None:
                self._emit_stage(StageUpdate(stage, WAITING, pending_detail))
                continue
            st = cs.state
            if st.terminated is not None:
                t = st.terminated
                code = t.exit_code
                # The runner leaves its lock record in the termination message (attempts, wait):
                # the run record is then the same as the local engine's.
                runner = _runner_record(t.message)
                times: Dict[str, Any] = dict(started=_epoch(t.started_at), ended=_epoch(t.finished_at), runner=runner,
                                             status=(runner or {}).get("status") or _runner_status(code))
                if code == 0:
                    self._emit_stage(StageUpdate(stage, DONE, t.reason or "Completed", 0, **times))
                else:
                    detail = f"{t.reason or 'Error'} (exit code {code})"
                    text = (runner or {}).get("message") or (t.message if runner is None else "")
                    if text:
                        detail += f": {one_line(text)[:200]}"
                    self._emit_stage(StageUpdate(stage, FAILED, detail, code, **times))
                self._start_log(name, stage)
            elif st.running is not None:
                self._emit_stage(StageUpdate(stage, RUNNING, "running", started=_epoch(st.running.started_at)))
                self._start_log(name, stage)
            else:
                waiting = st.waiting
                reason = (waiting.reason if waiting else "") or "waiting"
                message = (waiting.message if waiting else "") or ""
                if reason in FATAL_WAITING_REASONS:
                    text = fatal_message(f"job {self.job_name}", stage, image, reason, message)
                    self._emit_stage(StageUpdate(stage, FAILED, f"{reason}: image {image}"))
                    self.failed_stage = stage
                    return False, text
                self._emit_stage(StageUpdate(stage, WAITING, reason))
        return None

    # --------------------------------------------------------------- main loop

    def run(self) -> JobOutcome:
        kube = self.kube
        if self.stage_order:
            for stage in self.stage_order:
                self._emit_stage(StageUpdate(stage, WAITING, "pod not created yet"))
        watchers = [
            Watcher("pod", kube.core.list_namespaced_pod, kube.namespace,
                     {"label_selector": f"job-name={self.job_name}"}, self.q, self.stop, self.watch_server_timeout),
            Watcher("job", kube.batch.list_namespaced_job, kube.namespace,
                     {"field_selector": f"metadata.name={self.job_name}"}, self.q, self.stop, self.watch_server_timeout),
        ]
        for w in watchers:
            w.start()
        start = time.monotonic()
        deadline = start + self.timeout
        pod_ended_at: Optional[float] = None
        result: Optional[Tuple[bool, str]] = None
        timed_out = False
        try:
            while result is None:
                now = time.monotonic()
                if now >= deadline:
                    timed_out = True
                    break
                wait = deadline - now
                if pod_ended_at is not None:
                    wait = min(wait, max(0.0, pod_ended_at + self.job_condition_grace - now))
                try:
                    item = self.q.get(timeout=min(wait, 1.0) if wait > 0 else 0.01)
                except queue.Empty:
                    item = None
                if item is not None:
                    result = self._handle(item)
                    if result is not None:
                        break
                # the pod ended but the Job shows no condition (yet): trust the pod after a grace
                cur = self.pods.get(self.current_pod) if self.current_pod else None
                phase = cur.status.phase if cur is not None and cur.status else None
                if phase in ("Succeeded", "Failed"):
                    pod_ended_at = pod_ended_at or time.monotonic()
                    if time.monotonic() - pod_ended_at >= self.job_condition_grace:
                        result = (phase == "Succeeded", f"the pod {self.current_pod} {phase.lower()}")
                else:
                    pod_ended_at = None
            if timed_out:
                running = [s for s in self.stage_order if self.states.get(s) and self.states[s].state in (WAITING, RUNNING)]
                where = f" (still {self.states[running[0]].state}: {', '.join(running)})" if running else ""
                result = (False, f"job {self.job_name} did not finish within {self.timeout:g} s{where}; "
                                 "pass a larger --timeout or look at the stage logs")
        except BaseException:
            # Ctrl-C, a ClusterError or a failing on_event: stop everything, report nothing more
            for w in watchers:
                w.stop()
            self._stop_logs()
            raise
        for w in watchers:
            w.stop()
        succeeded = bool(result and result[0])
        self._refresh_current_pod()
        if not succeeded or timed_out:
            self._stop_logs()
        self._drain_logs()
        self._stop_logs()
        assert result is not None
        succeeded, message = result
        if not succeeded and self.failed_stage is None:
            failed = [s for s, u in self.states.items() if u.state == FAILED]
            self.failed_stage = failed[0] if failed else None
        if succeeded:
            message = f"job {self.job_name} succeeded"
        elif self.failed_stage and "stage" not in message:
            upd = self.states[self.failed_stage]
            message = f"{message}; stage {self.failed_stage} failed ({upd.detail})"
        return JobOutcome(
            succeeded=succeeded,
            stages={s: self.states[s] for s in self.stage_order if s in self.states},
            failed_stage=None if succeeded else self.failed_stage,
            message=message,
            timed_out=timed_out,
            job_name=self.job_name,
        )

    def _handle(self, item: Item) -> Optional[Tuple[bool, str]]:
        if isinstance(item, LogText):
            self.on_event(LogLine(item.container, item.text))
        elif isinstance(item, LogNote):
            self._info(item.text)
        elif isinstance(item, WatchNote):
            self._info(item.text, once=False)
        elif isinstance(item, WatchFailed):
            raise ClusterError(
                f"cannot watch the {item.kind} of job {self.job_name} in namespace {self.kube.namespace!r}: {item.text}"
            )
        elif isinstance(item, Listed):
            kind, objs = item.kind, item.objects
            if kind == "pod":
                self.pods = {p.metadata.name: p for p in objs}
                self._pick_current_pod()
                return self._on_current_pod()
            if not objs:
                return False, (f"job {self.job_name} does not exist in namespace {self.kube.namespace!r} "
                               "(deleted, or the release created no Job)")
            for job in objs:
                state = job_state(job)
                if state is not None:
                    return state
        elif isinstance(item, Changed):
            kind, etype, obj = item.kind, item.type, item.object
            if kind == "pod":
                if etype == "DELETED":
                    self.pods.pop(obj.metadata.name, None)
                else:
                    self.pods[obj.metadata.name] = obj
                self._pick_current_pod()
                if etype == "DELETED" and obj.metadata.name != self.current_pod:
                    return None
                return self._on_current_pod()
            if etype == "DELETED":
                return False, f"job {self.job_name} was deleted while it ran"
            return job_state(obj)
        return None

    def _on_current_pod(self) -> Optional[Tuple[bool, str]]:
        if self.current_pod is None:
            return None
        return self._on_pod(self.pods[self.current_pod])

    def _refresh_current_pod(self) -> None:
        """Read the pod once more: the Job may report its end before the pod watch shows the last states."""
        if self.current_pod is None:
            return
        try:
            pod = self.kube.core.read_namespaced_pod(self.current_pod, self.kube.namespace, _request_timeout=(CONNECT_TIMEOUT, 10))
        except Exception:  # noqa: BLE001 - best effort; the states seen so far stand
            return
        self.pods[self.current_pod] = pod
        self._on_pod(pod)

    def _drain_logs(self) -> None:
        """Deliver what the log threads still have; wait a little for their last lines."""
        deadline = time.monotonic() + self.log_drain_timeout
        while True:
            alive = [log for log in self.logs.values() if log.thread.is_alive()]
            try:
                item = self.q.get(timeout=0.05 if alive else 0.0)
            except queue.Empty:
                if not alive or time.monotonic() >= deadline:
                    break
                continue
            if isinstance(item, (LogText, LogNote, WatchNote)):
                self._handle(item)
            elif isinstance(item, (Listed, Changed)) and item.kind == "pod":
                # late pod updates still tell the final state of the stages
                try:
                    self._handle(item)
                except ClusterError:
                    pass


def _epoch(when: Any) -> Optional[float]:
    """A container status time (datetime from the client) as epoch seconds."""
    try:
        return float(when.timestamp()) if when is not None else None
    except (AttributeError, ValueError, OverflowError):
        return None


def _runner_record(message: Optional[str]) -> Optional[Dict[str, Any]]:
    """The stage runner's record, when it wrote one as the termination message."""
    import json

    if not message or not message.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(message)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("protocol") else None


def _runner_status(code: Optional[int]) -> str:
    from clara_wf.runner import protocol

    if code == 0:
        return protocol.STATUS_SUCCEEDED
    return {protocol.EXIT_CONFIG: protocol.STATUS_CONFIG_ERROR, protocol.EXIT_TIMEOUT: protocol.STATUS_TIMEOUT,
            protocol.EXIT_UPSTREAM_FAILED: protocol.STATUS_UPSTREAM_FAILED,
            protocol.EXIT_START_FAILED: protocol.STATUS_START_FAILED,
            protocol.EXIT_LOCK_WRITE: protocol.STATUS_LOCK_WRITE_FAILED,
            protocol.EXIT_RUN_TIMEOUT: protocol.STATUS_RUN_TIMEOUT,
            protocol.EXIT_LOCKDIR_GONE: protocol.STATUS_LOCKDIR_GONE}.get(code or 0, protocol.STATUS_FAILED)
