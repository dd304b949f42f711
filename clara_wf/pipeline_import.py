"""`clara-wf import`: a Clara pipeline definition becomes stages and a DAG workflow.

A Clara pipeline (api-version 0.4.0 and 0.5.0; 0.3.0 read as 0.4.0) lists operators,
each a container with inputs (``from`` an upstream operator's named output, or the job
payload) and outputs. Importing one:

* scaffolds one stage per operator exactly as ``clara-wf cs`` does
  (:func:`clara_wf.charts.create_stage`), then sets the values the operator defines:
  ``image.repository/tag``, ``command``, ``env`` (its ``variables``), ``resources`` (its
  ``requests``: gpu → limits ``nvidia.com/gpu``, cpu/memory → requests) and
  ``services: ["trtis"]`` for an operator with a ``trtis`` service;
* writes ``workflows.<id>`` in the DAG form: ``stages`` in a topological order,
  ``waitLocks`` derived from the inputs, ``args`` and ``io`` (named inputs and outputs).

Safety: everything is checked (the document, its template parameters, the DAG, names
already taken) before anything is written; the whole change (new stage folders, the new
values.yaml) is computed first, in a scratch copy of the chart, then applied; a failure
while applying restores values.yaml and removes the folders created. values.yaml is
edited as text: only the stage blocks between ``##BEGIN_NAME##``/``##END_NAME##`` and the
workflow's own entry change, every other byte stays. Stages and the workflow entry carry a
``# clara-wf import: pipeline "NAME"`` comment, which is how a re-import knows they are its
own to update; anything else with the same name is refused unless ``force``. Importing the
same file again changes nothing.

The core never prints: warnings (unknown fields, ignored services) and notes go to the
``warn``/``note`` callbacks and are kept on the plan.
"""

from __future__ import annotations

import copy
import difflib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from clara_wf import charts, dag, journal, triton
from clara_wf import values_edit as ve
from clara_wf.errors import InputError
from clara_wf.project import TEMPLATE_STAGE, Project

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


def _where(op: Optional[str], part: str = "") -> str:
    if op is None:
        return part or "the pipeline"
    return f"operator '{op}'" + (f" {part}" if part else "")


def _unknown(mapping: dict, known: set, where: str, warn: Callback) -> None:
    extra = [str(k) for k in mapping if k not in known]
    if extra:
        names = ", ".join(f"'{k}'" for k in extra)
        warn(f"{where}: unknown field{'s' if len(extra) > 1 else ''} {names} ignored "
             f"(clara-wf reads api-version {' and '.join(SUPPORTED_VERSIONS)} fields)")


def _read_document(path: Path) -> Tuple[dict, str]:
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


def _fill_parameters(path: Path, data: dict, given: Dict[str, str]) -> Tuple[dict, Dict[str, str]]:
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
            defaults.setdefault(str(key), "" if value is None else _scalar_text(value))
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


def _scalar_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def _api_version(path: Path, data: dict, note: Callback, warn: Callback) -> str:
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


def _label(value, what: str) -> str:
    name = str(value) if value is not None else ""
    if not name or not charts.is_dns_label(name) or name == TEMPLATE_STAGE:
        extra = " ('template' is the folder stages are copied from)" if name == TEMPLATE_STAGE else ""
        raise InputError(
            f"{what} {name!r} is not usable as a stage name: use lower-case letters, digits and '-', "
            f"start and end with a letter or digit, at most 63 characters{extra}"
        )
    return name


def _abs_path(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where} has no path (a folder path in the container, e.g. /input)")
    path = value.strip()
    if not path.startswith("/"):
        raise InputError(f"{where}: path {path!r} must be absolute (start with '/')")
    normal = str(PurePosixPath(path))
    if normal == "/" or ".." in PurePosixPath(path).parts:
        raise InputError(f"{where}: path {path!r} cannot be mounted (use a folder such as /input)")
    return normal


def _name_text(value, where: str) -> str:
    text = _scalar_text(value).strip()
    if not text or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise InputError(f"{where}: name {text!r} may only hold letters, digits, '-' and '_'")
    return text


def _typed(item: dict, where: str, version: str) -> None:
    kind = item.get("type")
    if kind is None or str(kind) == "stream":
        return
    raise InputError(
        f"{where} has type {kind!r}: shared-memory data (api-version 0.5.0 types array/string/primitives) "
        "is not supported; clara-wf passes data between stages through folders (type stream)"
    )


def _operator(raw, index: int, version: str, path: Path, warn: Callback, note: Callback) -> Operator:
    if not isinstance(raw, dict):
        raise InputError(f"{path}: operators[{index}] must be a mapping (name, container, input, output)")
    if "name" not in raw:
        raise InputError(f"{path}: operators[{index}] has no name")
    name = _label(raw.get("name"), "operator name")
    typed = tuple(int(x) for x in version.split(".")) >= (0, 5, 0)
    _unknown(raw, OPERATOR_FIELDS, _where(name), warn)

    container = raw.get("container")
    if not isinstance(container, dict) or not container.get("image"):
        raise InputError(f"{_where(name)} has no container.image")
    _unknown(container, CONTAINER_FIELDS, _where(name, "container"), warn)
    image = _scalar_text(container["image"]).strip()
    tag = _scalar_text(container.get("tag")).strip()
    last = image.rsplit("/", 1)[-1]
    if not tag and ":" in last and "@" not in image:
        image, tag = image.rsplit(":", 1)
    tag = tag or "latest"
    command = container.get("command")
    if command is not None:
        if not isinstance(command, list) or not command:
            raise InputError(f"{_where(name)}: container.command must be a non-empty list of strings")
        command = [_scalar_text(a) for a in command]
    else:
        warn(f"{_where(name)} has no container.command (the image's entrypoint): the stage keeps the "
             f"scaffold's command; set stages.{name}.command to the program the image runs")

    variables_raw = raw.get("variables") or {}
    if not isinstance(variables_raw, dict):
        raise InputError(f"{_where(name)}: variables must be a mapping of NAME: value")
    variables: Dict[str, str] = {}
    for key, value in variables_raw.items():
        key = str(key)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise InputError(f"{_where(name)}: variable name {key!r} is not a valid environment variable name")
        if key in CHART_VARIABLES:
            warn(f"{_where(name)}: variable {key} is set by the chart itself; the pipeline's value is dropped")
            continue
        variables[key] = _scalar_text(value)

    requests_raw = raw.get("requests") or {}
    if not isinstance(requests_raw, dict):
        raise InputError(f"{_where(name)}: requests must be a mapping (gpu, cpu, memory)")
    _unknown(requests_raw, REQUEST_FIELDS, _where(name, "requests"), warn)
    requests: Dict[str, Any] = {}
    for key in ("gpu", "cpu", "memory"):
        if key in requests_raw and requests_raw[key] is not None:
            value = requests_raw[key]
            if key in ("gpu", "cpu"):
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise InputError(f"{_where(name)}: requests.{key} {value!r} is not a number") from None
                if number < 0 or (key == "gpu" and number != int(number)):
                    raise InputError(f"{_where(name)}: requests.{key} {value!r} must be a "
                                     f"{'whole ' if key == 'gpu' else ''}number >= 0")
                requests[key] = int(number) if number == int(number) else number
            else:
                text = _scalar_text(value).strip()
                if re.match(r"^\d+$", text):
                    requests[key] = f"{int(text)}Mi"  # Clara: megabytes
                elif re.match(r"^\d+(\.\d+)?([EPTGMK]i?|[mk])?$", text):
                    requests[key] = text
                else:
                    raise InputError(f"{_where(name)}: requests.memory {value!r} is not megabytes (e.g. 2048)")

    inputs: List[Dict[str, str]] = []
    raw_inputs = raw.get("input") or []
    if not isinstance(raw_inputs, list):
        raise InputError(f"{_where(name)}: input must be a list of {{path, from, name}}")
    for i, item in enumerate(raw_inputs):
        where = _where(name, f"input[{i}]")
        if not isinstance(item, dict):
            raise InputError(f"{where} must be a mapping (path, from, name)")
        _unknown(item, INPUT_FIELDS | (TYPED_FIELDS_050 if typed else set()), where, warn)
        if typed:
            _typed(item, where, version)
        entry = {"path": _abs_path(item.get("path"), where)}
        if item.get("from") is not None:
            entry["from"] = _scalar_text(item["from"]).strip()
            if item.get("name") is not None:
                entry["name"] = _name_text(item["name"], where)
        inputs.append(entry)

    outputs: List[Dict[str, str]] = []
    raw_outputs = raw.get("output") or []
    if not isinstance(raw_outputs, list):
        raise InputError(f"{_where(name)}: output must be a list of {{path, name}}")
    for i, item in enumerate(raw_outputs):
        where = _where(name, f"output[{i}]")
        if not isinstance(item, dict):
            raise InputError(f"{where} must be a mapping (path, name)")
        _unknown(item, OUTPUT_FIELDS | (TYPED_FIELDS_050 if typed else set()), where, warn)
        if typed:
            _typed(item, where, version)
        if item.get("name") is None and len(raw_outputs) > 1:
            raise InputError(f"{where} has no name; with several outputs each one needs a name")
        out_name = _name_text(item["name"], where) if item.get("name") is not None else DEFAULT_OUTPUT_NAME
        outputs.append({"name": out_name, "path": _abs_path(item.get("path"), where)})

    _check_own_io(name, inputs, outputs)

    services: List[str] = []
    raw_services = raw.get("services") or []
    if not isinstance(raw_services, list):
        raise InputError(f"{_where(name)}: services must be a list")
    for i, svc in enumerate(raw_services):
        where = _where(name, f"services[{i}]")
        if not isinstance(svc, dict) or not svc.get("name"):
            raise InputError(f"{where} must be a mapping with a name")
        svc_name = str(svc["name"])
        _unknown(svc, SERVICE_FIELDS, where, warn)
        connections = svc.get("connections") or {}
        if isinstance(connections, dict):
            _unknown(connections, CONNECTION_FIELDS, f"{where} connections", warn)
            for kind in ("http", "grpc"):
                for conn in connections.get(kind) or []:
                    if isinstance(conn, dict):
                        _unknown(conn, CONNECTION_ITEM_FIELDS, f"{where} connections.{kind}", warn)
        if svc_name.lower() in TRTIS_SERVICE_NAMES:
            if triton.SERVICE not in services:
                services.append(triton.SERVICE)
            http = (connections.get("http") if isinstance(connections, dict) else None) or []
            names = [str(c.get("name")) for c in http if isinstance(c, dict) and c.get("name")]
            if names and TRTIS_URI_VARIABLE not in names:
                warn(f"{where}: the operator expects Triton's address in {', '.join(names)}; the chart gives it "
                     f"as {TRTIS_URI_VARIABLE} (trtisUri)")
        else:
            warn(f"{where}: service '{svc_name}' is not one clara-wf provides (only trtis): ignored; "
                 "run it yourself and pass its address through variables")

    return Operator(
        name=name, description=_scalar_text(raw.get("description")), image=image, tag=tag, command=command,
        variables=variables, requests=requests, inputs=inputs, outputs=outputs, services=services,
    )


def _check_own_io(name: str, inputs: List[dict], outputs: List[dict]) -> None:
    paths: Dict[str, str] = {}
    for kind, items in (("input", inputs), ("output", outputs)):
        for item in items:
            if item["path"] in paths:
                raise InputError(f"{_where(name)}: path {item['path']} is used twice ({paths[item['path']]} and {kind})")
            paths[item["path"]] = kind
    seen = set()
    for item in outputs:
        key = item["name"].lower()
        if key in seen:
            raise InputError(f"{_where(name)}: two outputs are named {item['name']!r}")
        seen.add(key)
    if sum(1 for item in inputs if "from" not in item) > 1:
        raise InputError(f"{_where(name)} reads the job payload twice (two inputs without 'from')")


def _resolve_dag(path: Path, operators: List[Operator]) -> List[Operator]:
    """Check every ``from`` and name; the operators in a topological order (file order where free)."""
    by_name: Dict[str, Operator] = {}
    for op in operators:
        if op.name in by_name:
            raise InputError(f"{path}: two operators are named '{op.name}' (names must be unique)")
        by_name[op.name] = op
    for op in operators:
        seen = set()
        for i, item in enumerate(op.inputs):
            if "from" not in item:
                continue
            up = item["from"]
            where = _where(op.name, f"input[{i}]")
            if up == op.name:
                raise InputError(f"{where} reads from '{up}' itself: a pipeline is a DAG (cycle {up} -> {up})")
            if up not in by_name:
                raise InputError(f"{where} reads from '{up}', which is not an operator of the pipeline "
                                 f"(operators: {', '.join(o.name for o in operators)})")
            outs = by_name[up].outputs
            if "name" not in item:
                if len(outs) != 1:
                    listed = ", ".join(o["name"] for o in outs) or "none"
                    raise InputError(f"{where} reads from '{up}' without naming which output ({up}'s outputs: {listed})")
                item["name"] = outs[0]["name"]
            elif item["name"] not in [o["name"] for o in outs]:
                listed = ", ".join(o["name"] for o in outs) or "none"
                raise InputError(f"{where} reads output '{item['name']}' of '{up}', which '{up}' does not declare "
                                 f"({up}'s outputs: {listed})")
            key = (up, item["name"])
            if key in seen:
                raise InputError(f"{where} reads {up}/{item['name']} a second time")
            seen.add(key)

    names = [op.name for op in operators]
    upstream = {op.name: op.upstream for op in operators}
    ordered, stuck = dag.order(names, upstream)
    if stuck:
        raise InputError(f"{path}: the operators form a cycle: {' -> '.join(dag.find_cycle(names, upstream))}")
    return [by_name[name] for name in ordered]


def read_pipeline(path: Path, params: Optional[Dict[str, str]] = None, *,
                  warn: Callback = lambda _m: None, note: Callback = lambda _m: None) -> Pipeline:
    """Parse and check a pipeline definition; InputError names the first problem."""
    path = Path(path)
    data, _text = _read_document(path)
    version = _api_version(path, data, note, warn)
    _unknown(data, TOP_FIELDS, "the pipeline", warn)
    data, used = _fill_parameters(path, data, dict(params or {}))
    if "name" not in data or data.get("name") in (None, ""):
        raise InputError(f"{path} has no pipeline name")
    name = _scalar_text(data["name"]).strip()
    operators_raw = data.get("operators")
    if not isinstance(operators_raw, list) or not operators_raw:
        raise InputError(f"{path} has no operators (a list of operator definitions)")
    operators = [_operator(raw, i, version, path, warn, note) for i, raw in enumerate(operators_raw)]
    operators = _resolve_dag(path, operators)
    secrets = data.get("pull-secrets") or []
    if not isinstance(secrets, list):
        raise InputError(f"{path}: pull-secrets must be a list of secret names")
    pull_secrets = [str(s.get("name") if isinstance(s, dict) else s) for s in secrets]
    return Pipeline(path=path, api_version=version, name=name, description=_scalar_text(data.get("description")),
                    operators=operators, pull_secrets=pull_secrets, parameters=used)


# --- the workflow it becomes ---------------------------------------------------------------


def workflow_definition(pipeline: Pipeline, lock_names: Dict[str, str]) -> Dict[str, Any]:
    """``workflows.<id>`` in the DAG form (plain data)."""
    stages = [op.name for op in pipeline.operators]
    position = {name: i for i, name in enumerate(stages)}
    waits = []
    io_map: Dict[str, Any] = {}
    for op in pipeline.operators:
        ups = sorted(op.upstream, key=position.__getitem__)
        waits.append(",".join(lock_names[u] for u in ups))
        inputs = []
        for item in op.inputs:
            if "from" in item:
                inputs.append({"from": item["from"], "name": item["name"], "path": item["path"]})
            else:
                inputs.append({"path": item["path"]})
        io_map[op.name] = {"inputs": inputs, "outputs": [dict(o) for o in op.outputs]}
    return {"stages": stages, "waitLocks": waits, "args": [""] * len(stages), "io": io_map}


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _flow_items(items: List[Dict[str, str]]) -> str:
    parts = []
    for item in items:
        fields = ", ".join(f"{key}: {_q(item[key])}" for key in ("from", "name", "path") if key in item)
        parts.append("{" + fields + "}")
    return "[" + ", ".join(parts) + "]"


def workflow_block(workflow_id: str, pipeline_name: str, definition: Dict[str, Any], indent: int) -> List[str]:
    """The text of the workflow entry, at the indentation of the other workflows."""
    pad, pad2, pad3, pad4 = (" " * (indent + n) for n in (0, 2, 4, 6))
    lines = [
        f"{pad}{ve.scalar(workflow_id)}:\n",
        f"{pad2}{PROVENANCE}{_q(pipeline_name)} (re-import to update this entry)\n",
        f"{pad2}stages: [{', '.join(_q(s) for s in definition['stages'])}]\n",
        f"{pad2}waitLocks: [{', '.join(_q(w) for w in definition['waitLocks'])}]\n",
        f"{pad2}args: [{', '.join(_q(a) for a in definition['args'])}]\n",
        f"{pad2}io:\n",
    ]
    for stage in definition["stages"]:
        entry = definition["io"][stage]
        lines.append(f"{pad3}{ve.scalar(stage)}:\n")
        lines.append(f"{pad4}inputs: {_flow_items(entry['inputs'])}\n")
        lines.append(f"{pad4}outputs: {_flow_items(entry['outputs'])}\n")
    return lines


# --- values.yaml as text -------------------------------------------------------------------


def _rt_yaml():
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 1 << 20  # never fold a long command line
    return yaml


def _plain(node):
    return json.loads(json.dumps(node, default=str))


def _provenance_of(lines: Sequence[str]) -> Optional[str]:
    for line in lines:
        text = line.strip()
        if text.startswith(PROVENANCE):
            rest = text[len(PROVENANCE):]
            try:
                return json.JSONDecoder().raw_decode(rest)[0]
            except ValueError:
                return None
    return None


def _desired_values(op: Operator) -> Dict[str, Any]:
    resources: Dict[str, Any] = {}
    if op.requests.get("cpu") or op.requests.get("memory"):
        resources["requests"] = {k: str(op.requests[k]) for k in ("cpu", "memory") if op.requests.get(k)}
    if op.requests.get("gpu"):
        resources["limits"] = {"nvidia.com/gpu": str(op.requests["gpu"])}
    return {
        "image": {"repository": op.image, "tag": op.tag},
        "command": op.command,
        "env": dict(op.variables) or None,
        "resources": resources,
        "services": list(op.services),
    }


def _stage_block(lines: List[str], span: range, name: str, op: Operator, pipeline_name: str) -> Tuple[List[str], bool]:
    """The stage's marker block with the operator's values set; (lines, changed)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString as DQ

    inner = lines[span.start + 1: span.stop - 1]
    key_line = next((line for line in inner if line.strip() and not line.strip().startswith("#")), None)
    if key_line is None:
        raise InputError(f"the values block of stage '{name}' is empty")
    indent = len(key_line) - len(key_line.lstrip(" "))
    body = [line for line in inner if not line.strip().startswith(PROVENANCE)]
    dedented = "".join(line[indent:] if line[:indent].strip() == "" else line for line in body)
    yaml = _rt_yaml()
    doc = yaml.load(dedented)
    if not isinstance(doc, dict) or list(doc.keys()) != [name] or not isinstance(doc[name], dict):
        raise InputError(f"the values block of stage '{name}' must hold one mapping keyed '{name}'")
    values = doc[name]
    want = _desired_values(op)
    changed = _provenance_of(inner) != pipeline_name

    image = values.get("image")
    if not isinstance(image, dict):
        image = CommentedMap()
        values["image"] = image
        changed = True
    for key in ("repository", "tag"):
        if _plain(image.get(key)) != want["image"][key]:
            image[key] = DQ(want["image"][key])
            changed = True
    if want["command"] is not None and _plain(values.get("command")) != want["command"]:
        seq = CommentedSeq([DQ(a) for a in want["command"]])
        seq.fa.set_flow_style()
        values["command"] = seq
        changed = True
    if want["env"] is None:
        if "env" in values:
            del values["env"]
            changed = True
    elif _plain(values.get("env")) != want["env"]:
        env = CommentedMap((k, DQ(v)) for k, v in want["env"].items())
        keys = list(values.keys())
        if "env" in values:
            values["env"] = env
        else:
            values.insert(keys.index("resources") if "resources" in keys else len(keys), "env", env)
        changed = True
    if _plain(values.get("resources") or {}) != want["resources"]:
        res = CommentedMap()
        for part, items in want["resources"].items():
            res[part] = CommentedMap((k, DQ(v)) for k, v in items.items())
        if not want["resources"]:
            res.fa.set_flow_style()
        values["resources"] = res
        changed = True
    if _plain(values.get("services") or []) != want["services"]:
        seq = CommentedSeq([DQ(s) for s in want["services"]])
        seq.fa.set_flow_style()
        values["services"] = seq
        changed = True
    if not changed:
        return lines[span.start: span.stop], False

    out = io.StringIO()
    yaml.dump(doc, out)
    pad = " " * indent
    rendered = [pad + line if line.strip() else line for line in out.getvalue().splitlines(keepends=True)]
    block = [lines[span.start], f"{pad}{PROVENANCE}{_q(pipeline_name)}, operator {_q(op.name)}\n",
             *rendered, lines[span.stop - 1]]
    return block, True


# --- planning and applying -----------------------------------------------------------------


@dataclass
class StagePlan:
    name: str
    action: str  # "create", "update", "unchanged"


@dataclass
class ImportPlan:
    project: Project
    pipeline: Pipeline
    workflow_id: str
    stages: List[StagePlan]
    workflow_action: str  # "add", "update", "unchanged"
    definition: Dict[str, Any]
    old_text: str
    scaffolded_text: str  # values.yaml once the new stages are scaffolded (what `cs` writes)
    new_text: str
    warnings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    files: Dict[str, Dict[str, str]] = field(default_factory=dict)  # new stage -> its rendered files

    @property
    def changed(self) -> bool:
        return self.new_text != self.old_text or any(s.action == "create" for s in self.stages)

    @property
    def trtis_stages(self) -> List[str]:
        return [op.name for op in self.pipeline.operators if triton.SERVICE in op.services]

    def diff(self) -> str:
        values = str(self.project.values_file)
        return "".join(difflib.unified_diff(self.old_text.splitlines(keepends=True),
                                            self.new_text.splitlines(keepends=True), values, values))


def plan_import(
    project: Project,
    pipeline_path: Path,
    *,
    workflow_id: Optional[str] = None,
    params: Optional[Dict[str, str]] = None,
    force: bool = False,
    warn: Callback = lambda _m: None,
    note: Callback = lambda _m: None,
) -> ImportPlan:
    """Everything the import will do, checked; nothing is written."""
    warnings: List[str] = []
    notes: List[str] = []

    def _warn(message: str) -> None:
        warnings.append(message)
        warn(message)

    def _note(message: str) -> None:
        notes.append(message)
        note(message)

    pipeline = read_pipeline(pipeline_path, params, warn=_warn, note=_note)
    if workflow_id is None:
        if not charts.is_dns_label(pipeline.name):
            raise InputError(f"pipeline name {pipeline.name!r} is not a DNS-1123 label, so it cannot be the "
                             "workflow id: pass --workflow-id ID (lower-case letters, digits and '-')")
        workflow_id = pipeline.name
    else:
        workflow_id = _label(workflow_id, "--workflow-id")

    values_file = project.values_file
    old_text = ve.read_text(values_file)
    data = ve.read_values(values_file, old_text)
    lines = old_text.splitlines(keepends=True)
    stage_values = data.get("stages") or {}
    if not isinstance(stage_values, dict):
        raise InputError(f"{values_file}: 'stages' must be a mapping of stage names to their values")
    folders = set(charts.list_stages(project))
    markers = ve.MarkerIndex(values_file, lines)

    # Which stages exist, and may we update them?
    actions: Dict[str, str] = {}
    refused: List[str] = []
    for op in pipeline.operators:
        exists = op.name in folders or op.name in stage_values or markers.has(op.name) \
            or (project.stages_dir / op.name).is_symlink()
        if not exists:
            actions[op.name] = "create"
            continue
        span = markers.span(op.name)
        ours = span is not None and _provenance_of(lines[span.start: span.stop]) == pipeline.name
        if ours or force:
            if span is None or op.name not in folders or op.name not in stage_values:
                missing = "folder" if op.name not in folders else f"{charts.begin_marker(op.name)} block"
                raise InputError(f"stage '{op.name}' exists but has no {missing} to update: "
                                 f"`clara-wf ds {op.name} --force` removes it, then import again")
            actions[op.name] = "update"
        else:
            refused.append(op.name)
    if refused:
        raise InputError(
            f"stage{'s' if len(refused) > 1 else ''} {', '.join(refused)} already exist{'' if len(refused) > 1 else 's'} "
            f"and {'were' if len(refused) > 1 else 'was'} not created by importing pipeline '{pipeline.name}': "
            "rename the operator(s), or pass --force to take them over"
        )

    workflows = data.get("workflows")
    if isinstance(workflows, dict) and workflow_id in workflows:
        region = ve.mapping_region(values_file, ve.compose_mapping(values_file, old_text), lines, "workflows")
        span = ve.child_span(region, lines, workflow_id, own_comments=True)
        if _provenance_of(lines[span.start: span.stop]) != pipeline.name and not force:
            raise InputError(f"workflow '{workflow_id}' already exists in {values_file} and was not created by "
                             f"importing pipeline '{pipeline.name}': pass --workflow-id ID, or --force to replace it")
        previous = workflows[workflow_id].get("stages") if isinstance(workflows[workflow_id], dict) else None
        dropped = [str(s) for s in (previous or []) if str(s) not in actions]
        if dropped:
            _note(f"stage(s) {', '.join(dropped)} of the earlier workflow '{workflow_id}' are no longer in the "
                  f"pipeline; they stay in the chart (`clara-wf ds NAME` removes one)")

    # What `cs` makes of the new stages (all at once: one parse, however many operators).
    created = [op.name for op in pipeline.operators if actions[op.name] == "create"]
    scaffold = charts.scaffold(project, created, old_text) if created else charts.Scaffold(old_text, {})
    scaffolded = scaffold.text

    # Set each stage's values in its marker block, last block first so earlier lines keep their place.
    text_lines = scaffolded.splitlines(keepends=True)
    spans = ve.MarkerIndex(values_file, text_lines)
    by_name = {op.name: op for op in pipeline.operators}
    located = []
    for op in pipeline.operators:
        span = spans.span(op.name)
        if span is None:
            raise InputError(f"{values_file}: no {charts.begin_marker(op.name)} block for stage '{op.name}'")
        located.append((span, op))
    changed_by_name: Dict[str, bool] = {}
    for span, op in sorted(located, key=lambda item: item[0].start, reverse=True):
        block, changed = _stage_block(text_lines, span, op.name, by_name[op.name], pipeline.name)
        text_lines[span.start: span.stop] = block
        changed_by_name[op.name] = changed
    stage_plans = []
    for op in pipeline.operators:
        action = actions[op.name]
        if action == "update" and not changed_by_name[op.name]:
            action = "unchanged"
        stage_plans.append(StagePlan(op.name, action))

    # Lock names come from the stages' values (`cs` makes them NAME.lock).
    staged_text = "".join(text_lines)
    staged = ve.read_values(values_file, staged_text)
    lock_names = {}
    for op in pipeline.operators:
        lock_names[op.name] = dag.lock_name(op.name, staged["stages"][op.name])
    definition = workflow_definition(pipeline, lock_names)

    region = ve.mapping_region(values_file, ve.compose_mapping(values_file, staged_text), text_lines, "workflows")
    block = workflow_block(workflow_id, pipeline.name, definition, region.indent)
    workflows = staged.get("workflows")
    if isinstance(workflows, dict) and workflow_id in workflows:
        span = ve.child_span(region, text_lines, workflow_id, own_comments=True)
        old_block = text_lines[span.start: span.stop]
        workflow_action = "unchanged" if old_block == block else "update"
        text_lines[span.start: span.stop] = block
    else:
        workflow_action = "add"
        text_lines = ve.insert_lines(text_lines, region.end, block, ve.newline_of(staged_text))
    new_text = "".join(text_lines)
    ve.check_size(values_file, new_text)

    final = ve.read_values(values_file, new_text)
    if _plain(final["workflows"][workflow_id]) != definition:
        raise InputError(f"{values_file}: the workflow entry did not land under workflows: (check its indentation)")
    _validate_with_chart_rules(workflow_id, definition, lock_names)

    secrets = {str(s.get("name")) for s in (data.get("imagePullSecrets") or []) if isinstance(s, dict)}
    missing_secrets = [s for s in pipeline.pull_secrets if s not in secrets]
    if missing_secrets:
        _note(f"pull-secrets {', '.join(missing_secrets)}: the chart pulls with imagePullSecrets "
              f"({', '.join(sorted(secrets)) or 'none'}); add them there if the images need them")

    return ImportPlan(
        project=project, pipeline=pipeline, workflow_id=workflow_id, stages=stage_plans,
        workflow_action=workflow_action, definition=definition, old_text=old_text,
        scaffolded_text=scaffolded, new_text=new_text, warnings=warnings, notes=notes,
        files=scaffold.files,
    )


def _validate_with_chart_rules(workflow_id: str, definition: Dict[str, Any], lock_names: Dict[str, str]) -> None:
    """The same DAG checks `clara-wf test` and the chart make (clara_wf.workflow.validate_dag)."""
    from clara_wf import workflow

    validate = getattr(workflow, "validate_dag", None)
    if validate is not None:
        validate(workflow_id, copy.deepcopy(definition), dict(lock_names))


@dataclass
class ImportResult:
    plan: ImportPlan
    created: List[Path]
    values_file: Path


def apply_import(plan: ImportPlan) -> ImportResult:
    """Write what the plan says, whole or not at all (one journaled transaction under the chart lock)."""
    project = plan.project
    values_file = project.values_file
    with charts.chart_lock(project):
        if ve.read_text(values_file) != plan.old_text:
            raise InputError(f"{values_file} changed while the import was being prepared; run the import again")
        tx = journal.Transaction(project.chart_dir, f"import {plan.pipeline.path}")
        created: List[Path] = []
        try:
            for stage in plan.stages:
                if stage.action == "create":
                    created.append(charts.stage_folder(tx, project, stage.name, plan.files[stage.name]))
            tx.write(values_file, plan.old_text, plan.new_text)
        except BaseException:
            tx.discard()
            raise
        tx.commit()
    return ImportResult(plan=plan, created=created, values_file=values_file)


def import_pipeline(project: Project, pipeline_path: Path, *, dry_run: bool = False, **kwargs) -> ImportPlan:
    """Plan, then (unless dry_run) apply, holding the chart lock throughout: no other edit of the
    chart can come between what the plan read and what it writes."""
    with charts.chart_lock(project):
        plan = plan_import(project, pipeline_path, **kwargs)
        if not dry_run and plan.changed:
            apply_import(plan)
    return plan


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
