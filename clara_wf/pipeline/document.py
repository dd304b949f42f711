"""A Clara pipeline definition read and checked: the document, its parameters, its version."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from clara_wf import charts
from clara_wf import values_edit as ve
from clara_wf.errors import InputError
from clara_wf.project import TEMPLATE_STAGE

Callback = Callable[[str], None]


SUPPORTED_VERSIONS = ("0.4.0", "0.5.0")
ARGO_VERSION = "0.3.0"
PAYLOAD_NAME = "payload"  # Clara's name for the job payload as an input
DEFAULT_OUTPUT_NAME = "output"  # an operator's single unnamed output
TRTIS_SERVICE_NAMES = ("trtis", "triton")
TRTIS_URI_VARIABLE = "NVIDIA_CLARA_TRTISURI"
PROVENANCE = "# clara-wf import: pipeline "
_PLACEHOLDER = re.compile(r"\$\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")

# Fields each part of a definition may have; anything else is warned about by name.
TOP_FIELDS = {"api-version", "name", "description", "pull-secrets", "parameters", "operators"}
OPERATOR_FIELDS = {"name", "description", "container", "variables", "requests", "input", "output",
                   "services", "parameters"}
CONTAINER_FIELDS = {"image", "tag", "command"}
REQUEST_FIELDS = {"cpu", "gpu", "memory"}
INPUT_FIELDS = {"path", "from", "name"}
OUTPUT_FIELDS = {"path", "name"}
TYPED_FIELDS_050 = {"type", "element-type", "shape"}  # api-version 0.5.0+: typed inputs/outputs
SERVICE_FIELDS = {"name", "container", "requests", "connections"}
CONNECTION_FIELDS = {"http", "grpc"}
CONNECTION_ITEM_FIELDS = {"name", "port"}
# Variables the chart sets itself on every stage container: a pipeline must not override them.
CHART_VARIABLES = {
    "NVIDIA_CLARA_STAGENAME", "NVIDIA_CLARA_RUNSIMPLE", "NVIDIA_CLARA_TRTISURI", "NVIDIA_CLARA_APPDIR",
    "NVIDIA_CLARA_INPUTLOCK", "NVIDIA_CLARA_INPUTS", "NVIDIA_CLARA_JOBID", "NVIDIA_CLARA_JOBNAME",
    "NVIDIA_CLARA_LOGNAME", "NVIDIA_CLARA_LOCKDIR", "NVIDIA_CLARA_LOCKNAME", "NVIDIA_CLARA_OUTPUTS",
    "NVIDIA_CLARA_TIMEOUT", "NVIDIA_CLARA_WAITNAME", "NVIDIA_CLARA_INPUTPATHS", "NVIDIA_CLARA_OUTPUTPATHS",
}


# --- the pipeline document ---------------------------------------------------------------


@dataclass
class Operator:
    name: str
    description: str
    image: str
    tag: str
    command: Optional[List[str]]
    variables: Dict[str, str]
    requests: Dict[str, Any]
    inputs: List[Dict[str, str]]  # {"path"} for the payload, {"from", "name", "path"} otherwise
    outputs: List[Dict[str, str]]  # {"name", "path"}
    services: List[str]  # clara-wf service names: "trtis"

    @property
    def upstream(self) -> List[str]:
        seen: List[str] = []
        for item in self.inputs:
            if "from" in item and item["from"] not in seen:
                seen.append(item["from"])
        return seen


@dataclass
class Pipeline:
    path: Path
    api_version: str
    name: str
    description: str
    operators: List[Operator]  # in a topological order (the file's order where free)
    pull_secrets: List[str]
    parameters: Dict[str, str]  # the values used for ${{NAME}}


def location(op: Optional[str], part: str = "") -> str:
    if op is None:
        return part or "the pipeline"
    return f"operator '{op}'" + (f" {part}" if part else "")


def warn_unknown(mapping: dict, known: set, where: str, warn: Callback) -> None:
    extra = [str(k) for k in mapping if k not in known]
    if extra:
        names = ", ".join(f"'{k}'" for k in extra)
        warn(f"{where}: unknown field{'s' if len(extra) > 1 else ''} {names} ignored "
             f"(clara-wf reads api-version {' and '.join(SUPPORTED_VERSIONS)} fields)")


def read_document(path: Path) -> Tuple[dict, str]:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"no pipeline definition at {path}") from None
    except OSError as err:
        raise InputError(f"{path} cannot be read: {err.strerror}") from None
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a pipeline definition (YAML file)")
    if size > ve.MAX_VALUES_BYTES:
        raise InputError(f"{path} is {size / 1048576:.1f} MB: what it defines goes into values.yaml, "
                         f"which Helm limits to {ve.MAX_VALUES_BYTES // 1048576} MB")
    text = ve.read_text(path)
    data = ve.load(path, text)  # bounded: alias bombs, deep nesting, self-references refused
    if not isinstance(data, dict):
        raise InputError(f"{path}: a pipeline definition is a YAML mapping (api-version, name, operators)")
    return data, text


def _strings(node, visit: Callable[[str], str]):
    """A copy of node with visit() applied to every string (keys and values)."""
    if isinstance(node, dict):
        return {(visit(k) if isinstance(k, str) else k): _strings(v, visit) for k, v in node.items()}
    if isinstance(node, list):
        return [_strings(v, visit) for v in node]
    if isinstance(node, str):
        return visit(node)
    return node


def fill_parameters(path: Path, data: dict, given: Dict[str, str]) -> Tuple[dict, Dict[str, str]]:
    """Replace ``${{NAME}}`` placeholders: ``--set`` values first, then the document's defaults."""
    defaults: Dict[str, str] = {}
    declared = []
    operators = data.get("operators")
    if operators is not None and not isinstance(operators, list):
        raise InputError(f"{path}: operators must be a list of operator definitions, not {type(operators).__name__}")
    for owner in [data] + [op for op in (operators or []) if isinstance(op, dict)]:
        params = owner.get("parameters")
        if params is None:
            continue
        if not isinstance(params, dict):
            raise InputError(f"{path}: 'parameters' must be a mapping of parameter names to default values")
        for key, value in params.items():
            declared.append(str(key))
            defaults.setdefault(str(key), "" if value is None else scalar_text(value))
    body = {k: v for k, v in data.items() if k != "parameters"}
    body["operators"] = [
        {k: v for k, v in op.items() if k != "parameters"} if isinstance(op, dict) else op
        for op in (data.get("operators") or [])
    ] if isinstance(data.get("operators"), list) else data.get("operators")

    used: List[str] = []

    def collect(text: str) -> str:
        used.extend(_PLACEHOLDER.findall(text))
        return text

    _strings(body, collect)
    unknown = sorted(set(given) - set(used) - set(declared))
    if unknown:
        known = ", ".join(sorted(set(used) | set(declared))) or "none"
        raise InputError(f"--set {', '.join(unknown)}: {path} has no such template parameter (parameters: {known})")
    values = {**defaults, **given}
    missing = sorted({name for name in used if name not in values})
    if missing:
        raise InputError(
            f"{path} needs template parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
            + " ".join(f"--set {name}=VALUE" for name in missing)
        )

    budget = [ve.MAX_VALUES_BYTES]

    def fill(text: str) -> str:
        filled = _PLACEHOLDER.sub(lambda m: values[m.group(1)], text) if "${{" in text else text
        if filled is not text:
            budget[0] -= len(filled) - len(text)
            if budget[0] < 0:
                raise InputError(f"{path}: its template parameters expand it past "
                                 f"{ve.MAX_VALUES_BYTES // 1048576} MB, Helm's limit on a chart's values")
        if "${{" in _PLACEHOLDER.sub("", text):
            raise InputError(f"{path}: malformed template placeholder in {text[:80]!r} (expected ${{{{NAME}}}})")
        return filled

    result = _strings(body, fill)
    return result, {name: values[name] for name in sorted(set(used))}


def scalar_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def api_version(path: Path, data: dict, note: Callback, warn: Callback) -> str:
    raw = data.get("api-version")
    if raw is None:
        raise InputError(f"{path} has no api-version (Clara pipelines declare one, e.g. api-version: 0.4.0)")
    match = _VERSION.match(str(raw).strip())
    if not match:
        raise InputError(f"{path}: api-version {raw!r} is not a version like 0.4.0")
    version = f"{match.group(1)}.{match.group(2)}.{match.group(3) or 0}"
    key = tuple(int(x) for x in version.split("."))
    if key < (0, 3, 0):
        raise InputError(f"{path}: api-version {version} is older than 0.3.0, the oldest Clara pipeline format")
    if key < (0, 4, 0):
        note(f"api-version {version} is the Argo-era format: its fields are read as api-version 0.4.0's "
             "(clara-wf runs the operators with its own stage runner, not Argo)")
    elif key > (0, 5, 0):
        warn(f"api-version {version} is newer than 0.5.0: read with 0.5.0's fields; "
             "fields of later versions are reported as unknown")
    return version


def label_text(value, what: str) -> str:
    name = str(value) if value is not None else ""
    if not name or not charts.is_dns_label(name) or name == TEMPLATE_STAGE:
        extra = " ('template' is the folder stages are copied from)" if name == TEMPLATE_STAGE else ""
        raise InputError(
            f"{what} {name!r} is not usable as a stage name: use lower-case letters, digits and '-', "
            f"start and end with a letter or digit, at most 63 characters{extra}"
        )
    return name


def abs_path(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where} has no path (a folder path in the container, e.g. /input)")
    path = value.strip()
    if not path.startswith("/"):
        raise InputError(f"{where}: path {path!r} must be absolute (start with '/')")
    normal = str(PurePosixPath(path))
    if normal == "/" or ".." in PurePosixPath(path).parts:
        raise InputError(f"{where}: path {path!r} cannot be mounted (use a folder such as /input)")
    return normal


def name_text(value, where: str) -> str:
    text = scalar_text(value).strip()
    if not text or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise InputError(f"{where}: name {text!r} may only hold letters, digits, '-' and '_'")
    return text


def check_typed(item: dict, where: str, version: str) -> None:
    kind = item.get("type")
    if kind is None or str(kind) == "stream":
        return
    raise InputError(
        f"{where} has type {kind!r}: shared-memory data (api-version 0.5.0 types array/string/primitives) "
        "is not supported; clara-wf passes data between stages through folders (type stream)"
    )


def parse_set(items: Sequence[str]) -> Dict[str, str]:
    """``--set NAME=value`` items → {NAME: value}."""
    values: Dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InputError(f"--set {item!r}: expected NAME=value (a pipeline template parameter)")
        values[name] = value
    return values
