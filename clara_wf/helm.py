"""Helm calls: command lines for Helm 3 and Helm 4, ``--set-string`` escaping, running them.

Run-time values go through ``--set-string`` as the original ``clara-wf test`` does. Helm's
``strvals`` parser gives ``,`` (next pair), ``=`` (key/value), ``.`` and ``[`` (key path),
``{`` (list value) and ``\\`` (escape) a meaning; a backslash before any character makes it
literal, so every value is escaped and any path or name survives the trip unchanged.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, Dict, Iterable, Mapping, Optional, Protocol, Sequence

from clara_wf import external
from clara_wf.errors import ExternalToolError

HELM_ENV = "CLARA_WF_HELM"
_SPECIAL = set(",=\\.[]{}")
_VERSION = re.compile(r'Version:"v(\d+)\.(\d+)\.(\d+)')

log = logging.getLogger("clara_wf.helm")


class HelmLike(Protocol):
    """The part of ``Helm`` that installs and removes releases (tests pass a recording fake)."""

    @property
    def major(self) -> int: ...

    def install(self, release: str, chart: Path, *, namespace: str, set_string: Dict[str, str], wait: bool = True,
                timeout: str = "10m", kube_context: Optional[str] = None) -> str: ...

    def uninstall(self, release: str, *, namespace: str, kube_context: Optional[str] = None) -> None: ...

    def release_exists(self, release: str, *, namespace: str, kube_context: Optional[str] = None) -> bool: ...


def chart_fullname(release: str, chart_name: str) -> str:
    """The ``fullname`` helper of ``helm create`` charts (no nameOverride / fullnameOverride)."""
    name = release if chart_name in release else f"{release}-{chart_name}"
    return name[:63].rstrip("-")


def helm_timeout(seconds: float) -> str:
    """``--timeout`` for helm: whole seconds, rounded up, at least 1."""
    import math

    return f"{max(1, int(math.ceil(seconds)))}s"


def escape_set_string(value: str) -> str:
    """Escape a value (or a key segment) for ``--set-string``."""
    return "".join("\\" + ch if ch in _SPECIAL else ch for ch in str(value))


def set_string_args(values: Mapping[str, str]) -> list:
    """``--set-string key=value`` pairs; keys are dotted paths of plain names."""
    args = []
    for key, value in values.items():
        args += ["--set-string", f"{key}={escape_set_string(value)}"]
    return args


class Helm:
    """A helm binary (found once) and the commands clara-wf runs with it."""

    def __init__(self, binary: Optional[str] = None, log: Optional[Callable[[str], None]] = None):
        self.binary = binary or external.find_program("helm", HELM_ENV)
        self._log = log
        self._major: Optional[int] = None

    @property
    def major(self) -> int:
        """3 or 4: the flags for waiting and dry runs differ between them."""
        if self._major is None:
            out = self._run(["version"], what="helm version").stdout
            match = _VERSION.search(out)
            if not match:
                raise ExternalToolError(f"cannot tell the version of {self.binary} from {out.strip()[:120]!r}")
            self._major = int(match.group(1))
            if self._major not in (3, 4):
                raise ExternalToolError(f"helm v{self._major} is not supported: use Helm 3 or Helm 4")
        return self._major

    def _run(self, args: Sequence[str], *, what: str, hint: str = "", ok_codes=(0,)) -> external.Result:
        return external.run([self.binary, *args], what=what, hint=hint, ok_codes=ok_codes)

    @staticmethod
    def _common(namespace: Optional[str], kube_context: Optional[str]) -> list:
        args = []
        if namespace:
            args += ["--namespace", namespace]
        if kube_context:
            args += ["--kube-context", kube_context]
        return args

    def template_command(
        self,
        chart: Path,
        release: str,
        *,
        set_string: Mapping[str, str] = {},
        values_files: Iterable[Path] = (),
        namespace: Optional[str] = None,
        show_only: Iterable[str] = (),
    ) -> list:
        args = [self.binary, "template", release, str(chart), *self._common(namespace, None)]
        for path in values_files:
            args += ["--values", str(path)]
        args += set_string_args(set_string)
        for template in show_only:
            args += ["--show-only", template]
        return args

    def template(self, chart: Path, release: str, **kwargs) -> str:
        argv = self.template_command(chart, release, **kwargs)
        return self._run(argv[1:], what="helm template", hint="fix the chart or the values it names").stdout

    def install_command(
        self,
        release: str,
        chart: Path,
        *,
        namespace: str,
        set_string: Mapping[str, str],
        wait: bool = True,
        timeout: str = "10m",
        kube_context: Optional[str] = None,
        dry_run: bool = False,
    ) -> list:
        """The exact ``helm install`` line, with the flags right for this Helm major."""
        args = [self.binary, "install", release, str(chart), *self._common(namespace, kube_context)]
        args += set_string_args(set_string)
        if wait:
            # Helm 4 turned --wait into a strategy; "watcher" is what Helm 3's --wait did.
            args += ["--wait=watcher" if self.major >= 4 else "--wait", "--timeout", timeout]
        if dry_run:
            args += ["--dry-run=client"]
        return args

    def install(self, release: str, chart: Path, **kwargs) -> str:
        argv = self.install_command(release, chart, **kwargs)
        return self._run(argv[1:], what=f"helm install {release}",
                         hint="see the message above; `clara-wf --verbose` shows the command").stdout

    def uninstall(self, release: str, *, namespace: str, kube_context: Optional[str] = None) -> None:
        args = ["uninstall", release, *self._common(namespace, kube_context)]
        if self.major >= 4:
            args += ["--wait"]
        self._run(args, what=f"helm uninstall {release}")

    def release_exists(self, release: str, *, namespace: str, kube_context: Optional[str] = None) -> bool:
        result = self._run(["status", release, *self._common(namespace, kube_context)],
                           what=f"helm status {release}", ok_codes=(0, 1))
        if result.exit_code == 0:
            return True
        if "not found" in result.stderr:
            return False
        raise ExternalToolError(f"helm status {release} failed: {result.stderr.strip()[-300:]}")

    def lint(self, chart: Path, *, set_string: Mapping[str, str] = {}, strict: bool = False) -> str:
        args = ["lint", str(chart), *set_string_args(set_string)]
        if strict:
            args.append("--strict")
        return self._run(args, what="helm lint").stdout
