"""Is a Triton ready? Works for any Triton: the local one, the trtis chart's, another host's."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Callable, Optional

from clara_wf.errors import ExternalToolError

START_HINT = "start one with `clara-wf install_trtis --local`"
Progress = Optional[Callable[[str], None]]


def probe(url: str, timeout: float = 1.0) -> Optional[int]:
    """HTTP status of GET url, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


def base_url(uri: str) -> str:
    """``host:port`` (what ``trtisUri`` holds) or a full URL → the HTTP endpoint's URL."""
    uri = uri.strip().rstrip("/")
    return uri if uri.startswith(("http://", "https://")) else f"http://{uri}"


def ready_url(uri: str) -> str:
    return f"{base_url(uri)}/v2/health/ready"


def is_ready(uri: str, timeout: float = 1.0) -> bool:
    return probe(ready_url(uri), timeout) == 200


def wait_ready(uri: str, timeout: float = 60, *, model: Optional[str] = None, progress: Progress = None) -> None:
    """Wait until the Triton at ``uri`` (``host:port`` of its HTTP endpoint) is ready.

    With ``model``, also check that the ready server serves that model (a ready server
    has loaded every model it will load, so a missing model fails at once). Raises
    ExternalToolError naming the URI.
    """
    base = base_url(uri)
    deadline = time.monotonic() + timeout
    last_note = 0.0
    answered = False
    while True:
        code = probe(f"{base}/v2/health/ready")
        answered = answered or code is not None
        if code == 200:
            if model is None:
                return
            # A ready server has loaded every model it will load: not ready now means never.
            if probe(f"{base}/v2/models/{model}/ready") == 200:
                return
            raise ExternalToolError(
                f"Triton at {uri} does not serve model {model!r}: put {model}/config.pbtxt and {model}/1/ "
                f"in the model repository it serves (or set the model name the stage uses)"
            )
        now = time.monotonic()
        if now >= deadline:
            break
        if progress is not None and now - last_note >= 1.0:
            progress(f"waiting for Triton at {uri} to be ready")
            last_note = now
        time.sleep(0.1)
    if not answered:
        raise ExternalToolError(
            f"Triton at {uri} is not reachable: nothing answers on {base}/v2/health/ready; {START_HINT}"
        )
    raise ExternalToolError(
        f"Triton at {uri} answers but is not ready after {timeout:g}s (a model failed to load?): check its log"
    )
