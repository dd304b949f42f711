"""Following a container's log line by line, in a thread of its own, onto a queue of typed items."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator

from clara_wf.kube.config import CONNECT_TIMEOUT
from clara_wf.kube.errors import describe_exception, is_transport_error

# A stage may print nothing for a long time; the log stream must not time out meanwhile.
LOG_READ_TIMEOUT = 24 * 3600.0


@dataclass(frozen=True)
class LogText:
    """A line the container wrote."""

    container: str
    text: str


@dataclass(frozen=True)
class LogNote:
    """The log is not available or was cut (said once to the user)."""

    container: str
    text: str


@dataclass(frozen=True)
class LogEnded:
    container: str
    pod: str


def shutdown_response(resp: Any) -> None:
    """Unblock a thread reading ``resp`` (a urllib3 response) from another thread."""
    import socket

    try:
        conn = getattr(resp, "connection", None) or getattr(resp, "_connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001
        pass
    try:
        resp.close()
    except Exception:  # noqa: BLE001
        pass


def iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    buffer = b""
    for chunk in chunks:
        if not chunk:
            continue
        buffer += chunk
        while True:
            cut = buffer.find(b"\n")
            if cut < 0:
                break
            line, buffer = buffer[:cut], buffer[cut + 1:]
            yield line.decode("utf-8", errors="replace").rstrip("\r")
    if buffer:
        yield buffer.decode("utf-8", errors="replace").rstrip("\r")


def follow_log(core: Any, namespace: str, pod: str, container: str, out: "queue.Queue[Any]",
                stop: threading.Event, holder: Dict[str, Any]) -> None:
    """Follow one container's log, line by line, onto ``out``; tolerant of a container not started yet."""
    from kubernetes.client.exceptions import ApiException

    failures = 0
    while not stop.is_set():
        try:
            resp = core.read_namespaced_pod_log(
                pod, namespace, container=container, follow=True,
                _preload_content=False, _request_timeout=(CONNECT_TIMEOUT, LOG_READ_TIMEOUT),
            )
        except ApiException as exc:
            # 400 "container ... is waiting to start" / "ContainerCreating": try again shortly
            failures += 1
            if exc.status == 400 and failures < 600:
                stop.wait(0.5)
                continue
            if not stop.is_set():
                out.put(LogNote(container, f"the log of stage {container} is not available ({describe_exception(exc)})"))
            break
        except Exception as exc:  # noqa: BLE001
            failures += 1
            if is_transport_error(exc) and failures < 5 and not stop.is_set():
                stop.wait(0.5)
                continue
            if not stop.is_set():
                out.put(LogNote(container, f"the log of stage {container} is not available ({describe_exception(exc)})"))
            break
        holder["resp"] = resp
        try:
            for line in iter_lines(resp.stream(amt=None, decode_content=True)):
                out.put(LogText(container, line))
        except Exception as exc:  # noqa: BLE001
            if not stop.is_set():
                out.put(LogNote(container, f"the log of stage {container} was cut ({describe_exception(exc)})"))
        finally:
            holder.pop("resp", None)
            try:
                resp.release_conn()
            except Exception:  # noqa: BLE001
                pass
        break
    out.put(LogEnded(container, pod))
