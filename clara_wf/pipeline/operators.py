"""A pipeline read whole: its operators checked and their DAG resolved (every ``from`` and name)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from clara_wf import dag, triton
from clara_wf.errors import InputError
from clara_wf.pipeline.document import (
    CHART_VARIABLES,
    CONNECTION_FIELDS,
    CONNECTION_ITEM_FIELDS,
    CONTAINER_FIELDS,
    DEFAULT_OUTPUT_NAME,
    INPUT_FIELDS,
    OPERATOR_FIELDS,
    OUTPUT_FIELDS,
    REQUEST_FIELDS,
    SERVICE_FIELDS,
    TOP_FIELDS,
    TRTIS_SERVICE_NAMES,
    TRTIS_URI_VARIABLE,
    TYPED_FIELDS_050,
    Operator,
    Pipeline,
    abs_path,
    api_version,
    check_typed,
    fill_parameters,
    label_text,
    location,
    name_text,
    read_document,
    scalar_text,
    warn_unknown,
)

Callback = Callable[[str], None]


def _operator(raw, index: int, version: str, path: Path, warn: Callback, note: Callback) -> Operator:
    if not isinstance(raw, dict):
        raise InputError(f"{path}: operators[{index}] must be a mapping (name, container, input, output)")
    if "name" not in raw:
        raise InputError(f"{path}: operators[{index}] has no name")
    name = label_text(raw.get("name"), "operator name")
    typed = tuple(int(x) for x in version.split(".")) >= (0, 5, 0)
    warn_unknown(raw, OPERATOR_FIELDS, location(name), warn)

    container = raw.get("container")
    if not isinstance(container, dict) or not container.get("image"):
        raise InputError(f"{location(name)} has no container.image")
    warn_unknown(container, CONTAINER_FIELDS, location(name, "container"), warn)
    image = scalar_text(container["image"]).strip()
    tag = scalar_text(container.get("tag")).strip()
    last = image.rsplit("/", 1)[-1]
    if not tag and ":" in last and "@" not in image:
        image, tag = image.rsplit(":", 1)
    tag = tag or "latest"
    command = container.get("command")
    if command is not None:
        if not isinstance(command, list) or not command:
            raise InputError(f"{location(name)}: container.command must be a non-empty list of strings")
        command = [scalar_text(a) for a in command]
    else:
        warn(f"{location(name)} has no container.command (the image's entrypoint): the stage keeps the "
             f"scaffold's command; set stages.{name}.command to the program the image runs")

    variables_raw = raw.get("variables") or {}
    if not isinstance(variables_raw, dict):
        raise InputError(f"{location(name)}: variables must be a mapping of NAME: value")
    variables: Dict[str, str] = {}
    for key, value in variables_raw.items():
        key = str(key)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise InputError(f"{location(name)}: variable name {key!r} is not a valid environment variable name")
        if key in CHART_VARIABLES:
            warn(f"{location(name)}: variable {key} is set by the chart itself; the pipeline's value is dropped")
            continue
        variables[key] = scalar_text(value)

    requests_raw = raw.get("requests") or {}
    if not isinstance(requests_raw, dict):
        raise InputError(f"{location(name)}: requests must be a mapping (gpu, cpu, memory)")
    warn_unknown(requests_raw, REQUEST_FIELDS, location(name, "requests"), warn)
    requests: Dict[str, Any] = {}
    for key in ("gpu", "cpu", "memory"):
        if key in requests_raw and requests_raw[key] is not None:
            value = requests_raw[key]
            if key in ("gpu", "cpu"):
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise InputError(f"{location(name)}: requests.{key} {value!r} is not a number") from None
                if number < 0 or (key == "gpu" and number != int(number)):
                    raise InputError(f"{location(name)}: requests.{key} {value!r} must be a "
                                     f"{'whole ' if key == 'gpu' else ''}number >= 0")
                requests[key] = int(number) if number == int(number) else number
            else:
                text = scalar_text(value).strip()
                if re.match(r"^\d+$", text):
                    requests[key] = f"{int(text)}Mi"  # Clara: megabytes
                elif re.match(r"^\d+(\.\d+)?([EPTGMK]i?|[mk])?$", text):
                    requests[key] = text
                else:
                    raise InputError(f"{location(name)}: requests.memory {value!r} is not megabytes (e.g. 2048)")

    inputs: List[Dict[str, str]] = []
    raw_inputs = raw.get("input") or []
    if not isinstance(raw_inputs, list):
        raise InputError(f"{location(name)}: input must be a list of {{path, from, name}}")
    for i, item in enumerate(raw_inputs):
        where = location(name, f"input[{i}]")
        if not isinstance(item, dict):
            raise InputError(f"{where} must be a mapping (path, from, name)")
        warn_unknown(item, INPUT_FIELDS | (TYPED_FIELDS_050 if typed else set()), where, warn)
        if typed:
            check_typed(item, where, version)
        entry = {"path": abs_path(item.get("path"), where)}
        if item.get("from") is not None:
            entry["from"] = scalar_text(item["from"]).strip()
            if item.get("name") is not None:
                entry["name"] = name_text(item["name"], where)
        inputs.append(entry)

    outputs: List[Dict[str, str]] = []
    raw_outputs = raw.get("output") or []
    if not isinstance(raw_outputs, list):
        raise InputError(f"{location(name)}: output must be a list of {{path, name}}")
    for i, item in enumerate(raw_outputs):
        where = location(name, f"output[{i}]")
        if not isinstance(item, dict):
            raise InputError(f"{where} must be a mapping (path, name)")
        warn_unknown(item, OUTPUT_FIELDS | (TYPED_FIELDS_050 if typed else set()), where, warn)
        if typed:
            check_typed(item, where, version)
        if item.get("name") is None and len(raw_outputs) > 1:
            raise InputError(f"{where} has no name; with several outputs each one needs a name")
        out_name = name_text(item["name"], where) if item.get("name") is not None else DEFAULT_OUTPUT_NAME
        outputs.append({"name": out_name, "path": abs_path(item.get("path"), where)})

    _check_own_io(name, inputs, outputs)

    services: List[str] = []
    raw_services = raw.get("services") or []
    if not isinstance(raw_services, list):
        raise InputError(f"{location(name)}: services must be a list")
    for i, svc in enumerate(raw_services):
        where = location(name, f"services[{i}]")
        if not isinstance(svc, dict) or not svc.get("name"):
            raise InputError(f"{where} must be a mapping with a name")
        svc_name = str(svc["name"])
        warn_unknown(svc, SERVICE_FIELDS, where, warn)
        connections = svc.get("connections") or {}
        if isinstance(connections, dict):
            warn_unknown(connections, CONNECTION_FIELDS, f"{where} connections", warn)
            for kind in ("http", "grpc"):
                for conn in connections.get(kind) or []:
                    if isinstance(conn, dict):
                        warn_unknown(conn, CONNECTION_ITEM_FIELDS, f"{where} connections.{kind}", warn)
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
        name=name, description=scalar_text(raw.get("description")), image=image, tag=tag, command=command,
        variables=variables, requests=requests, inputs=inputs, outputs=outputs, services=services,
    )


def _check_own_io(name: str, inputs: List[dict], outputs: List[dict]) -> None:
    paths: Dict[str, str] = {}
    for kind, items in (("input", inputs), ("output", outputs)):
        for item in items:
            if item["path"] in paths:
                raise InputError(f"{location(name)}: path {item['path']} is used twice ({paths[item['path']]} and {kind})")
            paths[item["path"]] = kind
    seen = set()
    for item in outputs:
        key = item["name"].lower()
        if key in seen:
            raise InputError(f"{location(name)}: two outputs are named {item['name']!r}")
        seen.add(key)
    if sum(1 for item in inputs if "from" not in item) > 1:
        raise InputError(f"{location(name)} reads the job payload twice (two inputs without 'from')")


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
            where = location(op.name, f"input[{i}]")
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
    data, _text = read_document(path)
    version = api_version(path, data, note, warn)
    warn_unknown(data, TOP_FIELDS, "the pipeline", warn)
    data, used = fill_parameters(path, data, dict(params or {}))
    if "name" not in data or data.get("name") in (None, ""):
        raise InputError(f"{path} has no pipeline name")
    name = scalar_text(data["name"]).strip()
    operators_raw = data.get("operators")
    if not isinstance(operators_raw, list) or not operators_raw:
        raise InputError(f"{path} has no operators (a list of operator definitions)")
    operators = [_operator(raw, i, version, path, warn, note) for i, raw in enumerate(operators_raw)]
    operators = _resolve_dag(path, operators)
    secrets = data.get("pull-secrets") or []
    if not isinstance(secrets, list):
        raise InputError(f"{path}: pull-secrets must be a list of secret names")
    pull_secrets = [str(s.get("name") if isinstance(s, dict) else s) for s in secrets]
    return Pipeline(path=path, api_version=version, name=name, description=scalar_text(data.get("description")),
                    operators=operators, pull_secrets=pull_secrets, parameters=used)
