"""`clara-wf` and `python -m clara_wf`: the CLI, with the signals of the first and last moments handled.

A Ctrl-C or SIGTERM while Python is still importing the CLI, or while the interpreter is
shutting down after the command is done, would otherwise end in a traceback (or a death
by signal); here it is the usual one line (or, once the command is done, ignored).
"""

import signal
import sys

_received: list = []


def _early(signum, frame):
    _received.append(signum)
    raise KeyboardInterrupt


def run() -> None:
    # A shell without job control starts background commands with SIGINT ignored, and
    # Python keeps it so: Ctrl-C (or `kill -INT`) would then never stop a run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _early)
    try:
        from clara_wf.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("clara-wf: interrupted\n")
        sys.exit(128 + _received[0] if _received else 130)
    try:
        main()
    finally:  # the command has answered: a signal now must not turn its exit into a traceback
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    run()
