"""Import planned in full (a scratch copy of the chart), then applied under the chart lock."""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from clara_wf import charts, dag, journal, triton
from clara_wf import values_edit as ve
from clara_wf.errors import InputError
from clara_wf.pipeline.convert import plain_data, provenance_of, stage_block, workflow_block, workflow_definition
from clara_wf.pipeline.document import Pipeline, label_text
from clara_wf.pipeline.operators import read_pipeline
from clara_wf.project import Project

Callback = Callable[[str], None]


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
        workflow_id = label_text(workflow_id, "--workflow-id")

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
        ours = span is not None and provenance_of(lines[span.start: span.stop]) == pipeline.name
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
        if provenance_of(lines[span.start: span.stop]) != pipeline.name and not force:
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
        block, changed = stage_block(text_lines, span, op.name, by_name[op.name], pipeline.name)
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
    if plain_data(final["workflows"][workflow_id]) != definition:
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
