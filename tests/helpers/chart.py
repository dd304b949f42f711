"""Charts rendered by the real ``helm template`` and every object validated strictly, on every render.

As Apache Airflow's chart tests do: ``render_chart()`` passes ``--kube-version`` and
checks each rendered object against that Kubernetes version's schema with
``kubernetes-validate --strict`` (no unknown field), so no test can pass on an object a
cluster would refuse.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import yaml

from clara_wf.external import find_program
from clara_wf.helm import HELM_ENV, set_string_args
from helpers.project import REPO

# The oldest Kubernetes the charts support (test_chart_schemas checks the newer ones too).
KUBE_VERSION = os.environ.get("CLARA_WF_TEST_KUBE_VERSION", "1.30.0")


class HelmError(Exception):
    pass


def helm_binary() -> str:
    return find_program("helm", HELM_ENV)


def helm_major() -> int:
    out = subprocess.run([helm_binary(), "version", "--short"], capture_output=True, text=True, check=True).stdout
    return int(out.strip().lstrip("v").split(".")[0])


@functools.lru_cache(maxsize=4096)
def _validate_text(text: str, version: str) -> None:
    from kubernetes_validate import validate

    validate(json.loads(text), version, strict=True)


def validate_strictly(doc: dict, version: str = KUBE_VERSION) -> None:
    """Raise kubernetes_validate.ValidationError naming the field when ``doc`` is not valid."""
    _validate_text(json.dumps(doc, sort_keys=True, default=str), version)  # same object, validated once


def render_chart(
    chart: Path = REPO / "charts" / "clara-workflow",
    *,
    values: Optional[dict] = None,
    set_string: Optional[Dict[str, str]] = None,
    show_only: Iterable[str] = (),
    release: str = "test-wf",
    namespace: str = "default",
    kube_version: str = KUBE_VERSION,
    validate: bool = True,
) -> List[dict]:
    """``helm template`` the chart; the parsed documents (each strictly valid), or HelmError."""
    argv = [helm_binary(), "template", release, str(chart), "--namespace", namespace, "--kube-version", kube_version]
    tmp = None
    if values:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        yaml.safe_dump(values, tmp)
        tmp.close()
        argv += ["--values", tmp.name]
    argv += set_string_args(set_string or {})
    for template in show_only:
        argv += ["--show-only", template]
    try:
        result = subprocess.run(argv, capture_output=True, text=True)
    finally:
        if tmp:
            os.unlink(tmp.name)
    if result.returncode != 0:
        raise HelmError(result.stderr.strip())
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    if validate:
        for doc in docs:
            validate_strictly(doc, kube_version)
    return docs


def by_kind(docs: List[dict], kind: str) -> List[dict]:
    return [d for d in docs if d["kind"] == kind]


def job_containers(docs: List[dict]) -> List[dict]:
    (job,) = by_kind(docs, "Job")
    return job["spec"]["template"]["spec"]["containers"]


def env_of(container: dict) -> Dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}
