"""List-and-watch of one kind of object, resumed after a 410 Gone, onto a queue of typed items."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from clara_wf.kube.config import CONNECT_TIMEOUT
from clara_wf.kube.errors import describe_exception, is_transport_error, one_line

# Each watch request asks the server to end it after this many seconds; it is then resumed
# from the last resourceVersion. Keeps a silently dead connection from blocking forever.
WATCH_SERVER_TIMEOUT = 60


@dataclass(frozen=True)
class Listed:
    """A full listing (at the start, and again after 410 Gone)."""

    kind: str
    objects: List[Any]


@dataclass(frozen=True)
class Changed:
    """One watch event: ``type`` is ADDED, MODIFIED or DELETED."""

    kind: str
    type: str
    object: Any


@dataclass(frozen=True)
class WatchNote:
    text: str


@dataclass(frozen=True)
class WatchFailed:
    """The watch gave up (no permission, or the API kept failing)."""

    kind: str
    text: str


class Watcher(threading.Thread):
    """Lists then watches one kind of object, forever resuming; puts what it sees on a queue.

    Items put: ``Listed``, ``Changed``, ``WatchNote``, ``WatchFailed``. A 410 Gone (expired resourceVersion) leads to a fresh list and a
    watch from the list's resourceVersion.
    """

    MAX_FAILURES = 5

    def __init__(self, kind: str, list_fn: Callable[..., Any], namespace: str, selector: Dict[str, str],
                 out: "queue.Queue[Any]", stop: threading.Event, server_timeout: int) -> None:
        super().__init__(name=f"clara-wf-watch-{kind}", daemon=True)
        self.kind = kind
        self.list_fn = list_fn
        self.namespace = namespace
        self.selector = selector
        self.out = out
        self.stop_event = stop
        self.server_timeout = server_timeout
        self._watch: Any = None
        self.restarts_after_gone = 0

    def stop(self) -> None:
        self.stop_event.set()
        if self._watch is not None:
            self._watch.stop()

    def run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        rv: Optional[str] = None
        failures = 0
        while not self.stop_event.is_set():
            try:
                if rv is None:
                    listing = self.list_fn(self.namespace, _request_timeout=(CONNECT_TIMEOUT, 30), **self.selector)
                    rv = listing.metadata.resource_version
                    self.out.put(Listed(self.kind, list(listing.items or [])))
                w = watch.Watch()
                self._watch = w
                if self.stop_event.is_set():
                    return
                for event in w.stream(
                    self.list_fn,
                    self.namespace,
                    resource_version=rv,
                    timeout_seconds=self.server_timeout,
                    allow_watch_bookmarks=True,
                    _request_timeout=(CONNECT_TIMEOUT, self.server_timeout + 30),
                    **self.selector,
                ):
                    if self.stop_event.is_set():
                        w.stop()
                        break
                    if event["type"] == "BOOKMARK":
                        rv = w.resource_version or rv
                        continue
                    obj = event["object"]
                    meta = getattr(obj, "metadata", None)
                    if meta is not None and meta.resource_version:
                        rv = meta.resource_version
                    self.out.put(Changed(self.kind, event["type"], obj))
                failures = 0
            except ApiException as exc:
                if self.stop_event.is_set():
                    return
                if exc.status == 410:
                    self.restarts_after_gone += 1
                    self.out.put(WatchNote(f"the {self.kind} watch expired (410 Gone); listed again and resumed"))
                    rv = None
                    continue
                failures += 1
                if exc.status in (401, 403, 404) or failures >= self.MAX_FAILURES:
                    self.out.put(WatchFailed(self.kind, describe_exception(exc)))
                    return
                self.stop_event.wait(min(2.0 ** failures * 0.25, 5.0))
            except Exception as exc:  # noqa: BLE001
                if self.stop_event.is_set():
                    return
                if not is_transport_error(exc):
                    self.out.put(WatchFailed(self.kind, f"{type(exc).__name__}: {one_line(str(exc))[:200]}"))
                    return
                failures += 1
                if failures >= self.MAX_FAILURES:
                    self.out.put(WatchFailed(self.kind, describe_exception(exc)))
                    return
                self.stop_event.wait(min(2.0 ** failures * 0.25, 5.0))
