"""Run engines by name: ``local`` (host processes), ``kubernetes`` (helm + a cluster), and any
module of this package that registers itself (``container``).

An engine module is imported only when its engine is asked for, so listing the names
(``available()``, the CLI's ``--engine`` choices) costs no import. A module named NAME in
this package registers the engine called NAME: it calls ``register(engine)`` at import.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from clara_wf.errors import InputError

if TYPE_CHECKING:
    from clara_wf.engines.base import Engine, Outcome, RunPlan

__all__ = ["AUTO", "Engine", "Outcome", "RunPlan", "available", "choose_engine", "get", "register"]

AUTO = "auto"
_NOT_ENGINES = {"base"}
_registry: Dict[str, "Engine"] = {}


def __getattr__(name: str) -> Any:
    # The protocol's names on demand: the CLI lists engine names at every start without them.
    if name in ("Engine", "Outcome", "RunPlan"):
        from clara_wf.engines import base

        return getattr(base, name)
    raise AttributeError(name)


def register(engine: "Engine") -> "Engine":
    """Make ``engine`` available under ``engine.name`` (called by each engine module)."""
    _registry[engine.name] = engine
    return engine


def available() -> List[str]:
    """Engine names, in a stable order: the built-in ones first, then any other module's."""
    # A directory listing, not pkgutil: the CLI lists the names at every start.
    found = [f[:-3] for f in os.listdir(os.path.dirname(__file__))
             if f.endswith(".py") and not f.startswith("_") and f[:-3] not in _NOT_ENGINES]
    builtin = [name for name in ("local", "kubernetes") if name in found]
    return builtin + sorted(set(found) - set(builtin))


def get(name: str) -> "Engine":
    if name not in _registry:
        if name not in available():
            raise InputError(f"unknown engine {name!r}: choose one of {', '.join([AUTO, *available()])}")
        import importlib

        importlib.import_module(f"{__name__}.{name}")
        if name not in _registry:
            raise InputError(f"engine module {name!r} registers no engine of that name")
    return _registry[name]


def kubeconfig_present() -> Tuple[bool, str]:
    """Cheap first look for ``--engine auto``: no kubeconfig means no cluster to try."""
    from pathlib import Path

    paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if not paths:
        paths = [str(Path.home() / ".kube" / "config")]
    existing = [p for p in paths if Path(p).is_file()]
    if not existing:
        return False, f"no kubeconfig ({', '.join(paths)})"
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True, "running inside a cluster"
    return True, f"kubeconfig {existing[0]}"


def choose_engine(requested: str, kube_context: Optional[str] = None) -> Tuple[str, str]:
    """Resolve ``--engine``: (engine, why). ``auto`` is Kubernetes when a context answers, else local."""
    if requested != AUTO and requested not in available():
        raise InputError(f"unknown engine {requested!r}: choose one of {', '.join([AUTO, *available()])}")
    if requested != AUTO:
        return requested, "requested"
    present, why = kubeconfig_present()
    if not present:
        return "local", why
    from clara_wf import kube

    answers, reason = kube.probe(kube_context)
    return ("kubernetes", reason) if answers else ("local", f"{why} does not answer: {reason}")
