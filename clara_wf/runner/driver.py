"""An in-process stage, in the spirit of Clara's pipeline driver.

    from clara_wf.runner import Driver

    def prepare(driver, payload):   # runs at once, before the inputs are ready (load a model)
        ...
    def execute(driver, payload):   # runs once every upstream lock exists
        for entry in payload.input_entries: ...
    def cleanup(driver, payload):   # always runs last
        ...

    if __name__ == "__main__":
        Driver(execute, prepare=prepare, cleanup=cleanup).main()

The protocol is the runner's (docs/lock-protocol.md): same variables, waits, lock and
failure marker, exit codes. A callback that returns False or raises fails the stage
(exit 1, failure marker); cleanup runs in every case, before the lock is written, so a
failing cleanup still fails the stage.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from typing import Any, Callable, Mapping, Optional

from clara_wf.payload import ClaraPayload, PayloadError
from clara_wf.runner.config import ConfigError, StageConfig, load_config, var
from clara_wf.runner.protocol import EXIT_CONFIG, EXIT_SIGNAL_BASE, STATUS_FAILED, STATUS_TERMINATED
from clara_wf.runner.session import StageSession, StageTerminated, report_config_error

Callback = Callable[["Driver", ClaraPayload], Any]

EXIT_CALLBACK_FAILED = 1  # like an uncaught Python exception


class Driver:
    def __init__(self, execute: Callback, prepare: Optional[Callback] = None, cleanup: Optional[Callback] = None,
                 environ: Optional[Mapping[str, str]] = None):
        self._execute = execute
        self._prepare = prepare
        self._cleanup = cleanup
        self._environ = environ
        self.config: Optional[StageConfig] = None
        self.payload: Optional[ClaraPayload] = None
        self._session: Optional[StageSession] = None

    @property
    def stage_name(self) -> str:
        return self.config.stage if self.config else ""

    @property
    def job_id(self) -> str:
        return self.config.job_id if self.config else ""

    @property
    def job_name(self) -> str:
        return self.config.job_name if self.config else ""

    @property
    def trtis_uri(self) -> str:
        return self.config.trtis_uri if self.config else ""

    @property
    def app_dir(self) -> str:
        return (self.config.app_dir if self.config else None) or os.getcwd()

    def main(self) -> None:
        sys.exit(self.run())

    def run(self) -> int:
        """Prepare, wait, execute, cleanup; the exit code (see docs/lock-protocol.md)."""
        env = os.environ if self._environ is None else self._environ
        try:
            cfg = load_config(env)
            payload = ClaraPayload(env)
            try:
                # Read both now: a malformed variable is a configuration error, reported
                # before any callback runs.
                payload.input_entries
                payload.output_entries
            except PayloadError as e:
                raise ConfigError([str(e)], cfg.stage, cfg.lock_path) from None
        except ConfigError as err:
            report_config_error(err, env.get(var("JOBID"), ""), env.get(var("JOBNAME"), ""))
            return EXIT_CONFIG
        self.config, self.payload = cfg, payload
        session = self._session = StageSession(cfg)
        try:
            try:
                session.open()
            except ConfigError as err:
                report_config_error(err, cfg.job_id, cfg.job_name)
                return EXIT_CONFIG
            if cfg.app_dir:
                os.chdir(cfg.app_dir)  # as the runner does for a program
            session.install_signal_handlers()
            return self._run(session, payload)
        finally:
            session.restore_signal_handlers()
            session.close()

    def _run(self, session: StageSession, payload: ClaraPayload) -> int:
        start = time.time()
        code: Optional[int] = None
        try:
            session.raise_on_signal = True
            if self._prepare is not None:
                code = self._call(session, "prepare", self._prepare, payload, start)
            if code is None:
                # During the wait a signal ends the wait through the wake pipe instead.
                session.raise_on_signal = False
                code = session.wait("execute()")
                session.raise_on_signal = True
            if code is None:
                start = time.time()
                code = self._call(session, "execute", self._execute, payload, start)
        except StageTerminated as t:
            code = self._terminated(session, t.signum, start)
        finally:
            if self._cleanup is not None:
                try:
                    cleanup_code = self._call(session, "cleanup", self._cleanup, payload, start,
                                              already_failed=code is not None)
                except StageTerminated as t:
                    cleanup_code = self._terminated(session, t.signum, start) if code is None else None
                if code is None:
                    code = cleanup_code
            session.raise_on_signal = False
        if code is not None:
            return code
        return session.succeed(start, "execute() succeeded after %.3f s" % (time.time() - start))

    def _call(self, session: StageSession, name: str, fn: Callback, payload: ClaraPayload, start: float,
              already_failed: bool = False) -> Optional[int]:
        """None if ``fn`` did not fail; else the exit code (marker written unless one is)."""
        try:
            result = fn(self, payload)
        except Exception as e:
            text = traceback.format_exc().encode("utf-8", "replace")
            os.write(2, text)  # the stage's own error output, as a program's would be
            session.log(text)
            message = "%s() raised %s: %s" % (name, type(e).__name__, e)
        else:
            if result is not False:
                return None
            message = "%s() returned False" % name
        session.status(message)
        if already_failed:
            return EXIT_CALLBACK_FAILED
        return session.fail(STATUS_FAILED, EXIT_CALLBACK_FAILED, message,
                            program_exit_code=EXIT_CALLBACK_FAILED, start_epoch=start)

    @staticmethod
    def _terminated(session: StageSession, signum: int, start: float) -> int:
        message = "%s received; stage stopped" % signal.Signals(signum).name
        session.status(message)
        return session.fail(STATUS_TERMINATED, EXIT_SIGNAL_BASE + signum, message, start_epoch=start)
