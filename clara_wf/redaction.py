"""Secrets (the NGC API key) out of every output and every child process.

* :func:`take_from_environment` moves ``NGC_API_KEY`` out of ``os.environ`` at start-up, so
  no program clara-wf starts (helm, kubectl, tritonserver, stage programs) inherits it;
  :func:`ngc_api_key` gives it to the code that needs it.
* :func:`scrub` is applied where clara-wf prints errors (``clara_wf.cli.main``): it removes
  every registered secret in the forms it travels in — raw, JSON-escaped, base64 of the key,
  of ``$oauthtoken:KEY`` and of the whole ``.dockerconfigjson`` — also when an echo cut it
  short (a prefix, a suffix, a slice) or wrapped it over several lines.
"""

from __future__ import annotations

import base64
import json
import os
import re
from typing import List, Optional, Set

KEY_VARIABLE = "NGC_API_KEY"
SECRET_VARIABLES = (KEY_VARIABLE,)
WINDOW = 12  # a run of this many characters of an encoded secret counts as the secret
MASK = "***"

_secrets: List[str] = []
_windows: Set[str] = set()
_key: Optional[str] = None
# A run of base64 / base64url / key characters, possibly wrapped over lines.
_RUN = re.compile(r"[A-Za-z0-9+/=_-]+(?:[ \t]*\r?\n[ \t]*[A-Za-z0-9+/=_-]+)*")


def _forms(secret: str) -> List[str]:
    from clara_wf.kube.secrets import REGISTRY_USER, dockerconfigjson

    b64 = lambda data: base64.b64encode(data.encode()).decode("ascii")  # noqa: E731
    return [
        secret,
        json.dumps(secret)[1:-1],
        b64(secret),
        b64(f"{REGISTRY_USER}:{secret}"),
        dockerconfigjson(secret),
        base64.urlsafe_b64encode(secret.encode()).decode("ascii"),
    ]


def register(secret: Optional[str]) -> None:
    """From now on, ``secret`` is scrubbed from what clara-wf prints."""
    if not secret or secret in _secrets:
        return
    _secrets.append(secret)
    for form in _forms(secret):
        size = min(WINDOW, len(form))
        _windows.update(form[i:i + size] for i in range(len(form) - size + 1))


def take_from_environment() -> Optional[str]:
    """Remove the key from this process's environment (children never see it) and keep it here."""
    global _key
    for name in SECRET_VARIABLES:
        value = os.environ.pop(name, None)
        if value is not None and name == KEY_VARIABLE:
            _key = value
            register(value.strip())
            register(value)
    return _key


def ngc_api_key() -> Optional[str]:
    return _key if _key is not None else os.environ.get(KEY_VARIABLE)


def child_environment(env: Optional[dict] = None) -> dict:
    """``env`` (default: this process's) without secret variables, for a program we start."""
    base = dict(os.environ if env is None else env)
    for name in SECRET_VARIABLES:
        base.pop(name, None)
    return base


def _leaks(run: str) -> bool:
    compact = re.sub(r"\s+", "", run)
    if any(secret in compact for secret in _secrets):
        return True
    shortest = min((len(s) for s in _secrets), default=WINDOW)
    size = min(WINDOW, shortest)
    if len(compact) < size:
        return False
    return any(compact[i:i + size] in _windows for i in range(len(compact) - size + 1))


def scrub(text: str) -> str:
    """``text`` with every registered secret, in any of its forms, whole or cut, replaced by ***."""
    if not _secrets or not text:
        return text
    # Longest first: one form can hold another (base64 of "$oauthtoken:KEY" ends with base64 of KEY).
    for form in sorted({f for secret in _secrets for f in _forms(secret)}, key=len, reverse=True):
        text = text.replace(form, MASK)
    return _RUN.sub(lambda m: MASK if _leaks(m.group(0)) else m.group(0), text)


def forget_all() -> None:
    """Tests: start again with no secrets."""
    global _key
    _secrets.clear()
    _windows.clear()
    _key = None
