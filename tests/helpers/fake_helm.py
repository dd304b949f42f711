"""A recording stand-in for ``clara_wf.helm.Helm`` (the ``HelmLike`` part): installs and
uninstalls are recorded, releases are remembered, nothing runs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from clara_wf.errors import ExternalToolError


class FakeHelm:
    """Records calls; releases live in a set. ``fail_install`` makes install of that release raise."""

    major = 4

    def __init__(self, installed: Optional[List[str]] = None, fail_install: str = "") -> None:
        self.installed = set(installed or [])
        self.calls: List[tuple] = []
        self.fail_install = fail_install

    def install(self, release, chart, *, namespace, set_string, wait=True, timeout="10m", kube_context=None):
        self.calls.append(("install", release, Path(chart), namespace, dict(set_string), wait, timeout, kube_context))
        if release == self.fail_install:
            self.installed.add(release)  # helm leaves a failed release behind
            raise ExternalToolError(f"helm install {release} failed: boom")
        self.installed.add(release)
        return "STATUS: deployed"

    def uninstall(self, release, *, namespace, kube_context=None):
        self.calls.append(("uninstall", release, namespace, kube_context))
        self.installed.discard(release)

    def release_exists(self, release, *, namespace, kube_context=None):
        return release in self.installed

    def ops(self):
        return [(c[0], c[1]) for c in self.calls]
