"""Workflow DAGs, once: order and cycles (``graphlib``), lock owners, and finding a workflow.

Used by the checks before a run (``workflow.validate_dag``), ``clara-wf graph`` and
``clara-wf import``; each words its own message around what this finds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

from clara_wf.errors import InputError


def lock_name(stage: str, stage_values: Any) -> str:
    """The lock file a stage writes when done: ``stages.<name>.lockName``, else ``NAME.lock``."""
    lock = stage_values.get("lockName") if isinstance(stage_values, dict) else None
    return str(lock or f"{stage}.lock")


def lock_owners(stages: Iterable[str], stage_values: Mapping[str, Any]) -> Dict[str, str]:
    """Lock name → the stage that writes it (a later stage wins a shared name, as in the chart)."""
    values = stage_values if isinstance(stage_values, Mapping) else {}
    return {lock_name(stage, values.get(stage)): stage for stage in stages}


def order(nodes: Sequence[str], upstream: Mapping[str, Iterable[str]]) -> Tuple[List[str], List[str]]:
    """``(ordered, stuck)``: the nodes in a topological order, the earliest of ``nodes`` first
    wherever the order is free; and, in ``nodes`` order, those on or after a cycle (which
    therefore can never run). Upstream names that are not nodes are ignored."""
    import heapq
    from graphlib import CycleError, TopologicalSorter

    position = {node: i for i, node in enumerate(nodes)}
    graph = {node: [u for u in upstream.get(node, ()) if u in position] for node in nodes}
    on_cycles: set = set()
    while True:
        sorter = TopologicalSorter({n: [u for u in ups if u not in on_cycles] for n, ups in graph.items()
                                    if n not in on_cycles})
        try:
            sorter.prepare()
            break
        except CycleError as err:
            on_cycles.update(err.args[1])
    ordered: List[str] = []
    ready: List[Tuple[int, str]] = []
    while sorter.is_active():
        for node in sorter.get_ready():
            heapq.heappush(ready, (position[node], node))
        _, node = heapq.heappop(ready)
        ordered.append(node)
        sorter.done(node)
    stuck = set(on_cycles)
    for node in ordered:  # upstream first: a node after a stuck one is stuck too
        if any(u in stuck for u in graph[node]):
            stuck.add(node)
    return [n for n in ordered if n not in stuck], [n for n in nodes if n in stuck]


def find_cycle(nodes: Sequence[str], upstream: Mapping[str, Iterable[str]]) -> List[str]:
    """One cycle, upstream to downstream, starting and ending at its earliest node; [] if none."""
    from graphlib import CycleError, TopologicalSorter

    position = {node: i for i, node in enumerate(nodes)}
    try:
        TopologicalSorter({n: [u for u in upstream.get(n, ()) if u in position] for n in nodes}).prepare()
    except CycleError as err:
        loop = list(err.args[1][:-1])
        first = min(range(len(loop)), key=lambda i: position[loop[i]])
        loop = loop[first:] + loop[:first]
        return loop + [loop[0]]
    return []


def workflow_ids(data: Mapping[str, Any]) -> List[str]:
    """The keys of ``workflows`` in parsed values, sorted."""
    workflows = data.get("workflows") or {}
    return sorted(str(k) for k in workflows) if isinstance(workflows, dict) else []


# Pipeline ids of the guide (seed 003) that name no stages it lists: say what is missing
# instead of a bare "no workflow" (docs/reference-pipeline.md).
UNDEFINED_GUIDE_PIPELINES = {
    "a78b1e7a-0325-4d42-b90f-207eb576b14f": "ct-partial",
}


def find_workflow(data: Mapping[str, Any], workflow_id: str, values_file: Path) -> Any:
    """``workflows.<id>`` of parsed values; InputError listing the known ids when it is missing."""
    workflows = data.get("workflows") or {}
    if not isinstance(workflows, dict) or workflow_id not in workflows:
        guide_name = UNDEFINED_GUIDE_PIPELINES.get(workflow_id)
        if guide_name:
            raise InputError(
                f"the guide's pipeline {guide_name!r} ({workflow_id}) is not defined: the guide does not say which "
                f"of the ct stages it runs; add workflows.{workflow_id} to {values_file} with the stages you mean "
                "(see docs/reference-pipeline.md)"
            )
        known = ", ".join(workflow_ids(data)) or "none"
        raise InputError(f"no workflow {workflow_id!r} in {values_file} (workflows: {known})")
    return workflows[workflow_id]
