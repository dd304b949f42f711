"""`clara-wf workflow list|show|remove`: the workflows of values.yaml, by command.

``list`` and ``show`` read; ``remove`` deletes one entry of ``workflows:`` as whole lines
at the place the YAML parser reports (the entry from its key to the next one, with the
comment lines that belong to it), so every other byte of values.yaml stays as it was —
under the chart lock and through the intent journal, like ``cs``/``ds``/``import``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from clara_wf import charts, journal
from clara_wf import values_edit as ve
from clara_wf.errors import InputError
from clara_wf.project import Project


@dataclass(frozen=True)
class WorkflowInfo:
    workflow_id: str
    stages: List[str]
    form: str  # "seed" (stages/waitLocks/args) or "dag" (io)
    missing: List[str] = field(default_factory=list)  # stages the chart lacks (templates or values)
    default: bool = False  # the chart's workflow.id


def missing_stages(project: Project, stages: List[str], data: dict) -> List[str]:
    """The stages of a list that have no template folder or no values (all of them, in order)."""
    folders = set(charts.list_stages(project))
    values = data.get("stages") or {}
    return [s for s in stages if s not in folders or not isinstance(values, dict) or s not in values]


def _infos(project: Project, data: dict) -> List[WorkflowInfo]:
    workflows = data.get("workflows") or {}
    default = str((data.get("workflow") or {}).get("id", "")) if isinstance(data.get("workflow"), dict) else ""
    found = []
    for wf_id, definition in (workflows.items() if isinstance(workflows, dict) else []):
        definition = definition if isinstance(definition, dict) else {}
        stages = [str(s) for s in definition.get("stages") or []] if isinstance(definition.get("stages"), list) else []
        found.append(WorkflowInfo(str(wf_id), stages, "dag" if definition.get("io") else "seed",
                                  missing_stages(project, stages, data), str(wf_id) == default))
    return found


def list_workflows(project: Project) -> List[WorkflowInfo]:
    return _infos(project, charts.read_values(project.values_file))


def _known(data: dict) -> str:
    workflows = data.get("workflows") or {}
    return ", ".join(str(k) for k in workflows) if isinstance(workflows, dict) and workflows else "none"


def show_workflow(project: Project, workflow_id: str) -> tuple:
    """(its WorkflowInfo, its entry exactly as values.yaml writes it)."""
    values_file = project.values_file
    text = ve.read_text(values_file)
    data = ve.read_values(values_file, text)
    info = next((i for i in _infos(project, data) if i.workflow_id == workflow_id), None)
    if info is None:
        raise InputError(f"no workflow {workflow_id!r} in {values_file} (workflows: {_known(data)})")
    lines = text.splitlines(keepends=True)
    region = ve.mapping_region(values_file, ve.compose_mapping(values_file, text), lines, "workflows")
    span = ve.child_span(region, lines, workflow_id)
    return info, "".join(lines[span.start:span.stop])


def _entry_comment(line: str, indent: int) -> bool:
    stripped = line.lstrip(" ")
    return stripped.startswith("#") and len(line) - len(stripped) == indent


def remove_workflow(project: Project, workflow_id: str, *, force: bool = False) -> List[str]:
    """Remove ``workflows.<id>``; refuses the chart's default workflow unless ``force``.
    Returns the recovery notes of the chart lock (usually none)."""
    values_file = project.values_file
    with charts.chart_lock(project) as notes:
        text = ve.read_text(values_file)
        data = ve.read_values(values_file, text)
        workflows = data.get("workflows") or {}
        if not isinstance(workflows, dict) or workflow_id not in workflows:
            raise InputError(f"no workflow {workflow_id!r} in {values_file} (workflows: {_known(data)})")
        default = (data.get("workflow") or {}).get("id") if isinstance(data.get("workflow"), dict) else None
        if str(default) == workflow_id and not force:
            raise InputError(f"workflow {workflow_id!r} is the chart's default (workflow.id in {values_file}): "
                             "change workflow.id first, or pass --force")
        lines = text.splitlines(keepends=True)
        region = ve.mapping_region(values_file, ve.compose_mapping(values_file, text), lines, "workflows")
        span = ve.child_span(region, lines, workflow_id, own_comments=True)
        start = span.start
        while start > region.first and _entry_comment(lines[start - 1], region.indent):
            start -= 1  # the comment lines just above the key introduce it: they go with it
        new_text = "".join(ve.remove_lines(lines, range(start, span.stop)))
        left = ve.read_values(values_file, new_text).get("workflows") or {}
        if workflow_id in left or len(left) != len(workflows) - 1:
            raise InputError(f"{values_file}: could not isolate workflow {workflow_id!r}; remove it by hand")
        tx = journal.Transaction(project.chart_dir, f"workflow remove {workflow_id}")
        try:
            tx.write(values_file, text, new_text)
        except BaseException:
            tx.discard()
            raise
        tx.commit()
    return notes
