"""Hold Ctrl-C / SIGTERM / SIGHUP back while a few lines must run to their end.

Starting a server and writing down its pid, or stopping it and removing its record, must
not be cut in half by a signal: half-done, it leaves a server nobody knows about. Inside
``with deferred():`` those signals are noted; at the end of the block the first one is
delivered as if it had just arrived (the handler it would have run runs now).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Dict, Iterator, List, Tuple

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals (and may set handlers)
        return
    pending: List[Tuple[int, Any]] = []

    def hold(signum, frame) -> None:
        pending.append((signum, frame))

    previous: Dict[int, Any] = {int(signum): signal.signal(signum, hold) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if pending:
            signum, frame = pending[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)
