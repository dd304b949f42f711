"""Kubernetes API failures as one line for the user (the server's own message when it has one)."""

from __future__ import annotations

import json
from typing import Any


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def api_message(exc: Any) -> str:
    """The server's own one-line message from an ApiException (its Status ``message``)."""
    body = getattr(exc, "body", None)
    if body:
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and doc.get("message"):
                return one_line(doc["message"])
        except (ValueError, TypeError):
            pass
    return one_line(getattr(exc, "reason", "") or "")


def describe_exception(exc: BaseException) -> str:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        msg = api_message(exc)
        return f"HTTP {exc.status}" + (f": {msg}" if msg else "")
    # urllib3 wraps the useful part (connection refused, timed out) deep inside
    reason = getattr(exc, "reason", None)
    text = str(reason) if reason else str(exc)
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    if "Name or service not known" in text or "nodename nor servname" in text or "NameResolution" in text:
        return "host name does not resolve"
    return one_line(text)[:200] or type(exc).__name__


def is_transport_error(exc: BaseException) -> bool:
    import urllib3

    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError))
