"""`clara-wf graph`: a workflow's DAG as text, Graphviz dot, Mermaid or SVG.

Edges come from the workflow's ``io`` (an input ``from`` an upstream stage, labelled with
the output's name) when it has one, else from ``waitLocks``: a lock name is the
``lockName`` of the stage that writes it (``stages.<name>.lockName``, ``NAME.lock`` by
default), so seed-form workflows draw too. A lock no stage writes is shown as an
external node (``?name``); stages reading the job payload hang off a ``payload`` node.

SVG: Graphviz ``dot`` renders it when it is on PATH; otherwise clara-wf writes a simple
layered drawing itself (boxes in columns by depth, curved arrows), so no new dependency
is needed to get a picture a browser opens.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from xml.sax.saxutils import escape

from clara_wf import charts, dag
from clara_wf.errors import InputError
from clara_wf.project import Project

FORMATS = ("text", "dot", "mermaid", "svg")
PAYLOAD_NODE = "payload"


@dataclass
class Graph:
    workflow_id: str
    stages: List[str]
    edges: List[Tuple[str, str, str]] = field(default_factory=list)  # (upstream, downstream, label)
    payload_readers: List[str] = field(default_factory=list)
    external: List[str] = field(default_factory=list)  # "?lock" nodes: waits nobody satisfies
    source: str = "waitLocks"  # or "io"

    def upstream(self, stage: str) -> List[Tuple[str, str]]:
        return [(u, label) for u, d, label in self.edges if d == stage]

    def layers(self) -> List[List[str]]:
        """Stages by depth (longest path from a stage with no upstream); InputError on a cycle."""
        nodes = self.stages + self.external
        ups = {node: [u for u, _ in self.upstream(node)] for node in nodes}
        ordered, stuck = dag.order(nodes, ups)
        if stuck:
            loop = dag.find_cycle(nodes, ups)
            raise InputError(f"workflow '{self.workflow_id}' has a cycle: {' -> '.join(loop)}")
        depth: Dict[str, int] = {}
        for node in ordered:
            depth[node] = 1 + max((depth[u] for u in ups[node]), default=-1)
        count = max(depth.values(), default=-1) + 1
        layers: List[List[str]] = [[] for _ in range(count)]
        for node in nodes:  # workflow order inside a layer
            layers[depth[node]].append(node)
        return layers


def build_graph(workflow_id: str, definition: dict, stage_values: Optional[dict] = None) -> Graph:
    """The DAG of one ``workflows.<id>`` entry (plain data)."""
    stages = [str(s) for s in definition.get("stages") or []]
    if not stages:
        raise InputError(f"workflow '{workflow_id}' has no stages")
    graph = Graph(workflow_id=workflow_id, stages=stages)
    io = definition.get("io")
    if isinstance(io, dict) and io:
        graph.source = "io"
        known = set(stages)
        for stage in stages:
            entry = io.get(stage)
            if not isinstance(entry, dict):
                continue
            for item in entry.get("inputs") or []:
                if not isinstance(item, dict):
                    continue
                up = item.get("from")
                if up is None:
                    graph.payload_readers.append(stage)
                    continue
                up = str(up)
                if up not in known:
                    raise InputError(f"workflow '{workflow_id}': stage '{stage}' reads from '{up}', "
                                     f"which is not one of its stages")
                name = item.get("name")
                if name is None:
                    outs = (io.get(up) or {}).get("outputs") or []
                    name = outs[0].get("name") if len(outs) == 1 and isinstance(outs[0], dict) else ""
                graph.edges.append((up, stage, str(name or "")))
        # Explicit waitLocks add to the io edges (the chart waits for both); stages outside io have only those.
        waits = definition.get("waitLocks") or []
        owners = dag.lock_owners(stages, stage_values or {})
        for i, stage in enumerate(stages):
            if i < len(waits):
                _add_waits(graph, stage, str(waits[i] or ""), owners)
        return graph

    waits = definition.get("waitLocks") or [""] * len(stages)
    owners = dag.lock_owners(stages, stage_values or {})
    for i, stage in enumerate(stages):
        wait = str(waits[i] or "") if i < len(waits) else ""
        if not wait.strip() and i == 0:
            graph.payload_readers.append(stage)
        _add_waits(graph, stage, wait, owners)
    return graph


def _add_waits(graph: Graph, stage: str, wait: str, owners: Dict[str, str]) -> None:
    for lock in [w.strip() for w in wait.split(",") if w.strip()]:
        up = owners.get(lock)
        if up is None:
            up = f"?{lock}"
            if up not in graph.external:
                graph.external.append(up)
        if not any(u == up and d == stage for u, d, _ in graph.edges):
            graph.edges.append((up, stage, ""))


def load_graph(project: Project, workflow_id: str) -> Graph:
    data = charts.read_values(project.values_file)
    definition = dag.find_workflow(data, workflow_id, project.values_file)
    if not isinstance(definition, dict):
        raise InputError(f"workflow {workflow_id!r} in {project.values_file} is not a mapping")
    import json

    plain = json.loads(json.dumps(definition, default=str))
    stage_values = json.loads(json.dumps(data.get("stages") or {}, default=str))
    graph = build_graph(workflow_id, plain, stage_values)
    graph.layers()  # refuse a cycle early, naming it
    return graph


# --- renderings ----------------------------------------------------------------------------


def to_text(graph: Graph) -> str:
    layers = graph.layers()
    width = max(len(n) for n in graph.stages + graph.external)
    lines = [f"workflow {graph.workflow_id}: {len(graph.stages)} stage{'s' if len(graph.stages) != 1 else ''}, "
             f"{len(layers)} layer{'s' if len(layers) != 1 else ''}, {len(graph.edges)} edge"
             f"{'s' if len(graph.edges) != 1 else ''} (from {graph.source})"]
    for depth, layer in enumerate(layers):
        parallel = " (in parallel)" if len([n for n in layer if n in graph.stages]) > 1 else ""
        lines.append(f"layer {depth}{parallel}")
        for node in layer:
            sources = [f"{u} ({label})" if label else u for u, label in graph.upstream(node)]
            if node in graph.payload_readers:
                sources.insert(0, PAYLOAD_NODE)
            if node in graph.external:
                lines.append(f"  {node.ljust(width)}  (no stage writes this lock)")
                continue
            arrow = "<- " + ", ".join(sources) if sources else "(starts at once)"
            lines.append(f"  {node.ljust(width)}  {arrow}")
    return "\n".join(lines) + "\n"


def _dot_id(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: Graph) -> str:
    out = [f"digraph {_dot_id(graph.workflow_id)} {{",
           "  rankdir=LR;",
           '  node [shape=box, style="rounded,filled", fillcolor="#eef4fb", fontname="Helvetica"];',
           '  edge [fontname="Helvetica", fontsize=10];']
    if graph.payload_readers:
        out.append(f'  {_dot_id(PAYLOAD_NODE)} [shape=folder, fillcolor="#f5f5f5"];')
    for stage in graph.stages:
        out.append(f"  {_dot_id(stage)};")
    for node in graph.external:
        out.append(f'  {_dot_id(node)} [style=dashed, fillcolor=white];')
    for stage in graph.payload_readers:
        out.append(f"  {_dot_id(PAYLOAD_NODE)} -> {_dot_id(stage)};")
    for up, down, label in graph.edges:
        attrs = f" [label={_dot_id(label)}]" if label else ""
        out.append(f"  {_dot_id(up)} -> {_dot_id(down)}{attrs};")
    out.append("}")
    return "\n".join(out) + "\n"


def to_mermaid(graph: Graph) -> str:
    ids: Dict[str, str] = {}
    out = ["flowchart LR"]

    def node(name: str) -> str:
        if name not in ids:
            ids[name] = f"n{len(ids)}"
        return ids[name]

    def text(name: str) -> str:
        return name.replace('"', "#quot;")

    if graph.payload_readers:
        out.append(f'  {node(PAYLOAD_NODE)}[("{PAYLOAD_NODE}")]')
    for stage in graph.stages:
        out.append(f'  {node(stage)}["{text(stage)}"]')
    for name in graph.external:
        out.append(f'  {node(name)}{{{{"{text(name)}"}}}}')
    for stage in graph.payload_readers:
        out.append(f"  {node(PAYLOAD_NODE)} --> {node(stage)}")
    for up, down, label in graph.edges:
        arrow = f'-->|"{text(label)}"|' if label else "-->"
        out.append(f"  {node(up)} {arrow} {node(down)}")
    return "\n".join(out) + "\n"


BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 170, 40, 90, 26, 24


def to_svg_builtin(graph: Graph) -> str:
    """A layered drawing: one column per depth, boxes ordered to keep arrows short."""
    layers = graph.layers()
    if graph.payload_readers:
        layers = [[PAYLOAD_NODE]] + layers
    # Order each column by the mean row of its upstream nodes (one barycentre pass).
    row: Dict[str, float] = {}
    ups: Dict[str, List[str]] = {}
    for up, down, _ in graph.edges:
        ups.setdefault(down, []).append(up)
    for stage in graph.payload_readers:
        ups.setdefault(stage, []).insert(0, PAYLOAD_NODE)
    for column in layers:
        original = {name: i for i, name in enumerate(column)}

        def key(name: str) -> Tuple[float, int]:
            rows = [row[u] for u in ups.get(name, []) if u in row]
            return (sum(rows) / len(rows) if rows else float(original[name]), original[name])  # noqa: B023 (sorted now)

        column.sort(key=key)
        for i, name in enumerate(column):
            row[name] = float(i)
    tallest = max(len(c) for c in layers)
    width = MARGIN * 2 + len(layers) * BOX_W + (len(layers) - 1) * GAP_X
    height = MARGIN * 2 + 28 + tallest * BOX_H + (tallest - 1) * GAP_Y
    pos: Dict[str, Tuple[float, float]] = {}
    for c, column in enumerate(layers):
        offset = (tallest - len(column)) * (BOX_H + GAP_Y) / 2
        for r, name in enumerate(column):
            pos[name] = (MARGIN + c * (BOX_W + GAP_X), MARGIN + 28 + offset + r * (BOX_H + GAP_Y))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="13">',
        f"<title>workflow {escape(graph.workflow_id)}</title>",
        "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" "
        "markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#555\"/></marker></defs>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{MARGIN}" y="{MARGIN + 8}" font-weight="bold">workflow {escape(graph.workflow_id)}</text>',
    ]
    edges = [(PAYLOAD_NODE, s, "") for s in graph.payload_readers] + list(graph.edges)
    for up, down, label in edges:
        (x1, y1), (x2, y2) = pos[up], pos[down]
        sx, sy, ex, ey = x1 + BOX_W, y1 + BOX_H / 2, x2, y2 + BOX_H / 2
        mid = (sx + ex) / 2
        out.append(f'<path class="edge" data-from="{escape(up)}" data-to="{escape(down)}" '
                   f'd="M {sx:.1f} {sy:.1f} C {mid:.1f} {sy:.1f}, {mid:.1f} {ey:.1f}, {ex:.1f} {ey:.1f}" '
                   'fill="none" stroke="#555" stroke-width="1.4" marker-end="url(#arrow)"/>')
        if label:
            out.append(f'<text x="{mid:.1f}" y="{(sy + ey) / 2 - 4:.1f}" text-anchor="middle" font-size="11" '
                       f'fill="#444">{escape(label)}</text>')
    for name, (x, y) in pos.items():
        if name == PAYLOAD_NODE:
            style = 'fill="#f5f5f5" stroke="#888"'
        elif name in graph.external:
            style = 'fill="white" stroke="#888" stroke-dasharray="4 3"'
        else:
            style = 'fill="#eef4fb" stroke="#3b6ea5"'
        shown = name if len(name) <= 24 else name[:23] + "…"
        out.append(f'<g class="node" data-name="{escape(name)}"><rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" '
                   f'height="{BOX_H}" rx="8" {style}/><text x="{x + BOX_W / 2:.1f}" y="{y + BOX_H / 2 + 4:.1f}" '
                   f'text-anchor="middle">{escape(shown)}</text></g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def to_svg(graph: Graph) -> Tuple[str, str]:
    """(svg, how): Graphviz dot when it is on PATH, else the built-in layout."""
    dot = shutil.which("dot")
    if dot:
        from clara_wf import external

        result = external.run([dot, "-Tsvg"], what="dot -Tsvg", stdin=to_dot(graph),
                              hint="Graphviz could not draw the graph")
        return result.stdout, "graphviz"
    return to_svg_builtin(graph), "built-in"


def render(graph: Graph, fmt: str) -> Tuple[str, str]:
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "text":
        return to_text(graph), "text"
    if fmt == "dot":
        return to_dot(graph), "dot"
    if fmt == "mermaid":
        return to_mermaid(graph), "mermaid"
    return to_svg(graph)


def write_output(text: str, output: Path) -> None:
    output = Path(output)
    if output.is_dir():
        raise InputError(f"--output {output} is a folder; give a file name")
    if not output.parent.is_dir():
        raise InputError(f"--output {output}: folder {output.parent} does not exist")
    from clara_wf import fsio

    fsio.atomic_write(output, text, durable=False)
