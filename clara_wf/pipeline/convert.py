"""What a pipeline becomes: the workflow entry (DAG form) and each stage's values block."""

from __future__ import annotations

import io
import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from clara_wf import values_edit as ve
from clara_wf.errors import InputError
from clara_wf.pipeline.document import PROVENANCE, Operator, Pipeline

Callback = Callable[[str], None]


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


def plain_data(node):
    return json.loads(json.dumps(node, default=str))


def provenance_of(lines: Sequence[str]) -> Optional[str]:
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


def stage_block(lines: List[str], span: range, name: str, op: Operator, pipeline_name: str) -> Tuple[List[str], bool]:
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
    changed = provenance_of(inner) != pipeline_name

    image = values.get("image")
    if not isinstance(image, dict):
        image = CommentedMap()
        values["image"] = image
        changed = True
    for key in ("repository", "tag"):
        if plain_data(image.get(key)) != want["image"][key]:
            image[key] = DQ(want["image"][key])
            changed = True
    if want["command"] is not None and plain_data(values.get("command")) != want["command"]:
        seq = CommentedSeq([DQ(a) for a in want["command"]])
        seq.fa.set_flow_style()
        values["command"] = seq
        changed = True
    if want["env"] is None:
        if "env" in values:
            del values["env"]
            changed = True
    elif plain_data(values.get("env")) != want["env"]:
        env = CommentedMap((k, DQ(v)) for k, v in want["env"].items())
        keys = list(values.keys())
        if "env" in values:
            values["env"] = env
        else:
            values.insert(keys.index("resources") if "resources" in keys else len(keys), "env", env)
        changed = True
    if plain_data(values.get("resources") or {}) != want["resources"]:
        res = CommentedMap()
        for part, items in want["resources"].items():
            res[part] = CommentedMap((k, DQ(v)) for k, v in items.items())
        if not want["resources"]:
            res.fa.set_flow_style()
        values["resources"] = res
        changed = True
    if plain_data(values.get("services") or []) != want["services"]:
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
