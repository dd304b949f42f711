"""One stage's side of the protocol: folders, status lines, the wait, the lock or marker.

Shared by the command-line runner (a program runs between wait and lock) and by the
in-process Driver (callbacks run instead).
"""

from __future__ import annotations

import json
import os
import select
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from clara_wf.runner.config import ConfigError, StageConfig, var
from clara_wf.runner.protocol import (
    EXIT_CONFIG,
    EXIT_LOCK_WRITE,
    EXIT_LOCKDIR_GONE,
    EXIT_SIGNAL_BASE,
    EXIT_TIMEOUT,
    EXIT_UPSTREAM_FAILED,
    STATUS_CONFIG_ERROR,
    STATUS_LOCK_WRITE_FAILED,
    STATUS_LOCKDIR_GONE,
    STATUS_SUCCEEDED,
    STATUS_TAG,
    STATUS_TERMINATED,
    STATUS_TIMEOUT,
    STATUS_UPSTREAM_FAILED,
    TMP_DIR,
    failure_marker_name,
    make_record,
    stage_of_lock,
    write_record_atomic,
)
from clara_wf.runner.wait import FAILED, GONE, INTERRUPTED, READY, wait_for

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StageTerminated(BaseException):
    """SIGTERM/SIGINT reached a Driver stage while its own code ran (BaseException, so
    that a callback's ``except Exception`` does not swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def status_line(stage: str, message: str) -> bytes:
    text = "[%s %s] %s" % (STATUS_TAG, stage or "-", message)
    # One line per message, whatever the message holds.
    return (" ".join(text.splitlines()) + "\n").encode("utf-8", "replace")


def log_stamp(epoch: float) -> bytes:
    """``2024-12-02T04:08:06.972Z `` (UTC, milliseconds): the prefix of every log line."""
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + ".%03dZ " % (int(epoch * 1000) % 1000)).encode()


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:
            return  # a closed stderr or full disk must not stop the stage
        view = view[n:]


TERMINATION_LOG = "/dev/termination-log"  # Kubernetes' default terminationMessagePath
TERMINATION_LIMIT = 4096  # what Kubernetes keeps of it


def termination_message(record: Dict[str, Any]) -> None:
    """In a Kubernetes container, leave the record as the termination message, so that the
    engine reads attempts and times from the container's status. Elsewhere: nothing."""
    if not os.path.isfile(TERMINATION_LOG):
        return
    data = json.dumps(record, sort_keys=True)
    if len(data) > TERMINATION_LIMIT:
        record = dict(record, attempts=[{k: v for k, v in a.items() if k != "message"} for a in record.get("attempts", [])][-10:])
        data = json.dumps(record, sort_keys=True)[:TERMINATION_LIMIT]
    try:
        with open(TERMINATION_LOG, "w") as f:
            f.write(data)
    except OSError:
        pass


def report_config_error(err: ConfigError, job_id: str = "", job_name: str = "") -> None:
    """Print each problem, and leave a failure marker where LOCKDIR/LOCKNAME allow, so
    that downstream stages stop at once instead of at their timeout."""
    for problem in err.problems:
        write_all(2, status_line(err.stage, "configuration error: " + problem))
    if err.lock_path is not None:
        now = time.time()
        record = make_record(
            stage=err.stage,
            lock=os.path.basename(err.lock_path),
            status=STATUS_CONFIG_ERROR,
            exit_code=EXIT_CONFIG,
            program_exit_code=None,
            job_id=job_id,
            job_name=job_name,
            start_epoch=now,
            end_epoch=now,
            waited_s=None,
            failed_stage=err.stage or None,
            message="configuration error: " + "; ".join(err.problems),
        )
        try:
            os.makedirs(os.path.dirname(err.lock_path), exist_ok=True)
            write_record_atomic(failure_marker_name(err.lock_path), record)
        except OSError:
            pass


class StageSession:
    def __init__(self, cfg: StageConfig):
        self.cfg = cfg
        self.t0 = time.monotonic()
        self.runner_start = time.time()
        self.log_fd: Optional[int] = None
        self._log_lock = threading.Lock()
        self.signum: Optional[int] = None
        self.child_pid: Optional[int] = None  # the program, leader of its own process group
        self.attempts: List[Dict[str, Any]] = []  # one entry per run of the program (records)
        self._kill_timer: Optional[threading.Timer] = None
        self.raise_on_signal = False
        self.waited_s: Optional[float] = None
        self.ready_note = ""
        self._release_watch: Optional[Callable[[], None]] = None
        self._old_handlers: Dict[int, Any] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- output ---------------------------------------------------------------
    def status(self, message: str) -> None:
        line = status_line(self.cfg.stage, message)
        write_all(2, line)
        if self.log_fd is not None:
            self.log_stamped([line[:-1]])

    def log(self, data: bytes) -> None:
        if self.log_fd is not None:
            with self._log_lock:
                write_all(self.log_fd, data)

    def log_stamped(self, lines: List[bytes]) -> None:
        """Append whole lines (without their newline) to the log, each after a UTC time
        stamp and a space; the text after the stamp is exactly what was written."""
        if self.log_fd is not None:
            stamp = log_stamp(time.time())
            self.log(b"".join(stamp + line + b"\n" for line in lines))

    # -- set-up ---------------------------------------------------------------
    def open(self) -> None:
        """Create the lock and log folders, open the log, clear this stage's own leftovers.

        Raises ConfigError (exit 112) when a folder or the log cannot be made."""
        cfg = self.cfg
        folders = []
        if cfg.lock_dir:
            # .tmp too: made now, its creation does not wake the stages waiting later.
            folders.append(("LOCKDIR", os.path.join(cfg.lock_dir, TMP_DIR)))
        if cfg.input_lock:
            folders.append(("INPUTLOCK", os.path.dirname(cfg.input_lock)))
        if cfg.log_name:
            folders.append(("LOGNAME", os.path.dirname(cfg.log_name)))
        problems = []
        for name, folder in folders:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as e:
                problems.append("cannot create the folder of %s %r: %s" % (var(name), folder, e.strerror or e))
        if cfg.log_name and not problems:
            try:
                self.log_fd = os.open(cfg.log_name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            except OSError as e:
                problems.append("cannot open %s %r: %s" % (var("LOGNAME"), cfg.log_name, e.strerror or e))
        if problems:
            writable_locks = cfg.lock_dir is not None and os.path.isdir(cfg.lock_dir)
            raise ConfigError(problems, cfg.stage, cfg.lock_path if writable_locks else None)
        # This stage's lock or marker from an earlier run in the same folder would tell the
        # local engine a wrong story; launchers still must give each run a clean LOCKDIR.
        for path in (cfg.lock_path, cfg.failed_path):
            if path:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def install_signal_handlers(self) -> None:
        # The program has its own process group, outside a terminal's foreground group:
        # Ctrl-C reaches it through the runner, once.
        for sig in FORWARDED_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if self.child_pid is not None:
            self.forward(signum)
            return
        try:
            os.write(self._wake_w, b"!")  # ends a wait at once
        except OSError:
            pass
        if self.raise_on_signal:
            raise StageTerminated(signum)

    def forward(self, signum: int) -> None:
        """Send ``signum`` to the program's process group; SIGKILL follows after STOPGRACE
        unless the program has exited by then (cancel_kill)."""
        pid = self.child_pid
        if pid is None:
            return
        try:
            os.killpg(pid, signum)
        except OSError:
            pass
        if self._kill_timer is None:
            def kill() -> None:
                if self.child_pid == pid:
                    self.status("the program did not exit within %g s of %s; sending SIGKILL to its process group"
                                % (self.cfg.stop_grace, signal.Signals(signum).name))
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except OSError:
                        pass

            self._kill_timer = threading.Timer(self.cfg.stop_grace, kill)
            self._kill_timer.daemon = True
            self._kill_timer.start()

    def cancel_kill(self) -> None:
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None

    def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless SIGTERM/SIGINT comes; False when one came."""
        if self.signum is not None:
            return False
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self.signum is None
            try:
                if select.select([self._wake_r], [], [], remaining)[0]:
                    return False
            except InterruptedError:
                pass

    def release_watch(self) -> None:
        """Close the wait's inotify descriptor (close-on-exec, so the program never holds
        it); done last, after the lock or marker is written (see wait_for)."""
        if self._release_watch is not None:
            self._release_watch()
            self._release_watch = None

    def close(self) -> None:
        self.release_watch()
        for fd in (self._wake_r, self._wake_w, self.log_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.log_fd = None

    # -- the wait -------------------------------------------------------------
    def wait(self, what: str = "the program", announce: bool = True) -> Optional[int]:
        """None when the stage may run; otherwise the exit code (failure marker written).

        ``announce=False`` leaves the "present" line (``ready_note``) to the caller, who
        prints it once the program has started: one status write less in the hand-off."""
        cfg = self.cfg
        if cfg.no_sync:
            self.waited_s = 0.0
            self.status("%s=TRUE: not waiting for any lock" % var("NOSYNCLOCK"))
            return None
        targets = cfg.wait_targets()
        if not targets:
            self.waited_s = 0.0
            self.status("no upstream lock to wait for (%s is empty, %s=TRUE)" % (var("WAITNAME"), var("RUNSIMPLE")))
            return None
        labels = ", ".join(t.label for t in targets)
        limit = "timeout %g s" % cfg.timeout if cfg.timeout > 0 else "no timeout"
        deadline = self.t0 + cfg.timeout if cfg.timeout > 0 else None

        def watching(mechanism: str) -> None:
            self.status("waiting for %s in %s (%s, %s)" % (labels, cfg.lock_dir, limit, mechanism))

        result, _, self._release_watch = wait_for(targets, cfg.job_id, deadline, self._wake_r, not cfg.poll, watching)
        self.waited_s = time.monotonic() - self.t0
        if result.outcome == READY:
            self.ready_note = "%s present after %.3f s" % (labels, self.waited_s)
            if announce:
                self.status(self.ready_note)
            return None
        if result.outcome == FAILED:
            assert result.failed is not None
            record = result.failed_record or {}
            lock_label = result.failed.label
            via = _text(record.get("stage")) or stage_of_lock(lock_label)
            root = _text(record.get("failed_stage")) or via
            if root == via:
                detail = _text(record.get("message")) or _text(record.get("status")) or "failure marker"
                message = "upstream stage %s failed (%s.failed: %s); not running %s" % (root, lock_label, detail, what)
            else:
                message = "upstream stage %s failed (reported by %s in %s.failed); not running %s" % (
                    root, via, lock_label, what)
            self.status(message)
            return self.fail(STATUS_UPSTREAM_FAILED, EXIT_UPSTREAM_FAILED, message, failed_stage=root)
        if result.outcome == GONE:
            message = "the folder %s was deleted or moved while waiting for %s; not running %s" % (
                result.missing[0], labels, what)
            self.status(message)
            return self.fail(STATUS_LOCKDIR_GONE, EXIT_LOCKDIR_GONE, message)
        if result.outcome == INTERRUPTED:
            signum = self.signum or signal.SIGTERM
            message = "%s received while waiting for %s; not running %s" % (
                signal.Signals(signum).name, ", ".join(result.missing), what)
            self.status(message)
            return self.fail(STATUS_TERMINATED, EXIT_SIGNAL_BASE + signum, message)
        message = "timed out after %g s waiting for %s; still missing: %s" % (
            cfg.timeout, labels, ", ".join(result.missing))
        if result.stale:
            message += " (%s left by another job id, not %s)" % (", ".join(result.stale), cfg.job_id)
        self.status(message)
        return self.fail(STATUS_TIMEOUT, EXIT_TIMEOUT, message)

    # -- outcomes -------------------------------------------------------------
    def _record(self, status: str, exit_code: int, program_exit_code: Optional[int], start_epoch: Optional[float],
                failed_stage: Optional[str], message: str) -> Dict[str, Any]:
        cfg = self.cfg
        return make_record(
            stage=cfg.stage,
            lock=cfg.lock_name or "",
            status=status,
            exit_code=exit_code,
            program_exit_code=program_exit_code,
            job_id=cfg.job_id,
            job_name=cfg.job_name,
            start_epoch=self.runner_start if start_epoch is None else start_epoch,
            end_epoch=time.time(),
            waited_s=self.waited_s,
            failed_stage=failed_stage,
            message=message,
            attempts=self.attempts,
            log=cfg.log_name or "",
        )

    def fail(self, status: str, exit_code: int, message: str, program_exit_code: Optional[int] = None,
             failed_stage: Optional[str] = None, start_epoch: Optional[float] = None) -> int:
        """Write the failure marker (when there is a lock folder) and return ``exit_code``."""
        path = self.cfg.failed_path
        if path:
            record = self._record(status, exit_code, program_exit_code, start_epoch,
                                  failed_stage or self.cfg.stage, message)
            try:
                write_record_atomic(path, record)
            except OSError as e:
                self.status("cannot write the failure marker %s: %s" % (path, e.strerror or e))
            termination_message(record)
        return exit_code

    def succeed(self, start_epoch: float, detail: str) -> int:
        """Write LOCKNAME; 0, or EXIT_LOCK_WRITE when it cannot be written."""
        path = self.cfg.lock_path
        if not path:
            self.status(detail + "; no lock to write (%s=TRUE)" % var("NOSYNCLOCK"))
            return 0
        record = self._record(STATUS_SUCCEEDED, 0, 0, start_epoch, None, "")
        try:
            write_record_atomic(path, record)
        except OSError as e:
            message = "%s, but cannot write %s: %s" % (detail, path, e.strerror or e)
            self.status(message)
            return self.fail(STATUS_LOCK_WRITE_FAILED, EXIT_LOCK_WRITE, message, 0, start_epoch=start_epoch)
        self.status("%s; wrote %s" % (detail, path))
        termination_message(record)
        return 0


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""
