"""The ``nvcr.io`` pull secret: its body from an NGC API key, and that key kept out of every message."""

from __future__ import annotations

import base64
import json
from typing import Optional

from clara_wf.errors import InputError

PULL_SECRET_NAME = "nvcr.io"
REGISTRY = "nvcr.io"
REGISTRY_USER = "$oauthtoken"
SECRET_TYPE = "kubernetes.io/dockerconfigjson"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def dockerconfigjson(key: str, *, registry: str = REGISTRY, username: str = REGISTRY_USER) -> str:
    """The ``.dockerconfigjson`` value (base64) of a registry pull secret for ``registry``."""
    auth = _b64(f"{username}:{key}".encode())
    doc = {"auths": {registry: {"username": username, "password": key, "auth": auth}}}
    return _b64(json.dumps(doc, separators=(",", ":")).encode())


class Redactor:
    """Removes a secret, in every form it travels in (whole, cut or wrapped), from any text:
    clara_wf.redaction is the one home of that; this registers the key there."""

    def __init__(self, secret: Optional[str]) -> None:
        from clara_wf import redaction

        redaction.register(secret)

    def __call__(self, text: str) -> str:
        from clara_wf import redaction

        return redaction.scrub(text)


def validate_key(key: str) -> str:
    """The NGC API key as pasted, stripped; an InputError when it cannot be one."""
    key = (key or "").strip()
    if not key:
        raise InputError("the NGC API key is empty; get one at https://ngc.nvidia.com/configuration/api-key")
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        raise InputError("the NGC API key contains spaces or control characters; paste it again")
    return key


def set_ngc_api_key(namespace: str, key: str, kube_context: Optional[str] = None, *,
                    kubeconfig: Optional[str] = None) -> str:
    """`clara-wf setkey`: create or replace the ``nvcr.io`` pull secret; "created" or "replaced".

    The key goes only into the secret's body; it is never logged nor put in a message.
    """
    from clara_wf.kube.client import Kube

    key = validate_key(key)  # before touching the cluster: an empty key is an input error
    with Kube(namespace, kube_context, kubeconfig=kubeconfig) as kube:
        return kube.apply_pull_secret(key)
