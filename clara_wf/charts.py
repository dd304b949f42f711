"""Stages of the clara-workflow chart: list, scaffold (``cs``) and delete (``ds``).

A stage is a folder ``templates/stages/NAME`` (container.yaml, volume.yaml) plus a block
of default values under ``stages:`` in values.yaml, between ``##BEGIN_NAME##`` and
``##END_NAME##`` lines. ``cs`` renders both from ``stages/template`` and
``_stage_values.yaml`` with jinja2 — in its immutable sandbox, since the template files
are data a project may have received from anyone — whose delimiters are set to
``[[= … =]]`` so that they can never collide with Helm's ``{{ … }}``.

values.yaml is edited as text (:mod:`clara_wf.values_edit`), so every other byte of the
file stays as it was; the result is parsed again before it replaces the file.

Every edit of the chart holds the chart lock (:func:`chart_lock`) from its first read to
its last write, and goes through an intent journal (:mod:`clara_wf.journal`): it lands
whole or not at all, and a command killed midway is rolled back by the next one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from clara_wf import fsio, journal
from clara_wf import values_edit as ve
from clara_wf.errors import InputError
from clara_wf.project import TEMPLATE_STAGE, Project

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def is_dns_label(name: str, max_length: int = 63) -> bool:
    """Lower-case letters, digits and '-', alphanumeric at both ends (container, release names)."""
    return isinstance(name, str) and len(name) <= max_length and _DNS_LABEL.fullmatch(name) is not None


TMP_PREFIX = journal.SCRATCH_PREFIX  # ignored by list_stages and by .helmignore
begin_marker = ve.begin_marker
end_marker = ve.end_marker
read_values = ve.read_values


def check_stage_name(name: str) -> None:
    """A stage name becomes a container name: it must be a DNS-1123 label."""
    if name == TEMPLATE_STAGE:
        raise InputError("'template' is the folder new stages are copied from; choose another stage name")
    if not is_dns_label(name):
        raise InputError(
            f"invalid stage name {name!r}: use lower-case letters, digits and '-', "
            "start and end with a letter or digit, at most 63 characters (it becomes a container name)"
        )


def list_stages(project: Project) -> List[str]:
    folder = project.stages_dir
    if not folder.is_dir():
        return []
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.is_dir() and entry.name != TEMPLATE_STAGE and not entry.name.startswith(".")
    )


# --- the chart lock, recovery -------------------------------------------------------------

_held = threading.local()


@contextlib.contextmanager
def chart_lock(project: Project) -> Iterator[List[str]]:
    """Hold the chart's lock (re-entrant within a thread); on taking it, recover what an
    interrupted command left. Yields the notes of that recovery (empty as a rule)."""
    key = str(project.chart_dir)
    held: Dict[str, int] = getattr(_held, "charts", None) or {}
    _held.charts = held
    if held.get(key):
        held[key] += 1
        try:
            yield []
        finally:
            held[key] -= 1
        return
    if not project.chart_dir.is_dir():
        raise InputError(f"{project.chart_dir} is missing")
    with fsio.lock(project.chart_dir):
        held[key] = 1
        try:
            yield recover(project)
        finally:
            held.pop(key, None)


def recover(project: Project) -> List[str]:
    """Roll back an interrupted edit and remove its scratch; the caller holds the chart lock."""
    notes = []
    label = journal.rollback(project.chart_dir)
    if label is not None:
        notes.append(f"an interrupted `clara-wf {label}` was rolled back")
    # Scratch of new and removed folders: stages, and the operator apps cs/ds handle
    # (scaffold.py; `ds` of the last app parks apps/ itself in the project root).
    for folder, prefix in ((project.stages_dir, TMP_PREFIX), (project.root / "apps", TMP_PREFIX),
                           (project.root, f"{TMP_PREFIX}deleted-apps-")):
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(folder):
                if entry.name.startswith(prefix):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
    fsio.remove_temp_files(project.chart_dir, project.values_file.name)
    fsio.remove_temp_files(project.chart_dir, journal.JOURNAL_NAME)
    return notes


# --- scaffolding -------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _compiled(text: str):
    """The template compiled once per text (an import renders the same template per operator)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        variable_start_string="[[=",
        variable_end_string="=]]",
        block_start_string="[[%",
        block_end_string="%]]",
        comment_start_string="[[#",
        comment_end_string="#]]",
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    return env.from_string(text)


def render_template(text: str, name: str, source: Path) -> str:
    """Fill in the stage name; the template is data, so it runs in jinja2's immutable sandbox
    (no attribute walks to Python internals, no mutation of what it is given)."""
    import jinja2

    try:
        return _compiled(text).render(name=name)
    except jinja2.TemplateError as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise InputError(f"{source}: cannot fill in the stage name: {first}") from None
    except RecursionError:
        raise InputError(f"{source}: cannot fill in the stage name: the template recurses without end") from None


def _template_text(source: Path) -> str:
    """A template file's text; a symlink is refused (it would copy whatever it points at)."""
    if source.is_symlink():
        raise InputError(f"{source} is a symlink: template files must be regular files (copy the file there instead)")
    return ve.read_text(source)


def _template_sources(project: Project) -> List[Path]:
    template = project.template_dir
    if template.is_symlink() or not template.is_dir():
        raise InputError(f"{template} is missing: it is the folder new stages are copied from")
    sources = []
    for entry in sorted(template.iterdir()):
        if entry.is_symlink():
            raise InputError(f"{entry} is a symlink: template files must be regular files (copy the file there instead)")
        if entry.is_file():
            sources.append(entry)
    if not sources:
        raise InputError(f"{template} has no files to copy")
    return sources


def _stage_values_block(project: Project, template: str, name: str, indent: int) -> List[str]:
    from ruamel.yaml.nodes import ScalarNode

    source = project.stage_values_file
    block = render_template(template, name, source)
    if not ve.reads_as_string(name):
        # Helm reads YAML 1.1, where an unquoted yes/off/123/1e3/null is no string: quote the
        # name wherever the template wrote it bare (a key or a value), so the stage works.
        root = ve.compose_mapping(source, block)
        bare = []
        stack = [root] if root is not None else []
        while stack:
            node = stack.pop()
            if isinstance(node, ScalarNode):
                if node.value == name and not node.style:  # plain (None or "" by parser)
                    bare.append((node.start_mark.index, node.end_mark.index))
            else:
                stack.extend(part for item in node.value for part in (item if isinstance(item, tuple) else (item,)))
        for start, end in sorted(set(bare), reverse=True):
            block = block[:start] + f'"{name}"' + block[end:]
    parsed = ve.read_values(source, block)
    if list(parsed.keys()) != [name]:
        raise InputError(f"{source} must hold exactly one mapping, keyed by the stage name ([[= name =]])")
    lines = block.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    if not any(line.strip() == begin_marker(name) for line in lines):
        lines = [begin_marker(name) + "\n", *lines, end_marker(name) + "\n"]
    pad = " " * indent
    return [pad + line if line.strip() else line for line in lines]


@dataclass
class Scaffold:
    """What ``cs`` of some names makes: values.yaml's new text and each stage's files."""

    text: str
    files: Dict[str, Dict[str, str]]  # stage name -> file name -> content


def scaffold(project: Project, names: Sequence[str], text: str) -> Scaffold:
    """values.yaml ``text`` with the stages' default-value blocks added, and their rendered
    files; nothing is written. Refuses a name taken in the folder, the values or the markers."""
    values_file = project.values_file
    for name in names:
        check_stage_name(name)
    if len(set(names)) != len(names):
        raise InputError(f"stage names repeat: {', '.join(sorted({n for n in names if list(names).count(n) > 1}))}")
    sources = _template_sources(project)
    if not project.stage_values_file.is_file() or project.stage_values_file.is_symlink():
        what = "is a symlink" if project.stage_values_file.is_symlink() else "is missing"
        raise InputError(f"{project.stage_values_file} {what}: it holds the default values of a new stage")
    templates = {source: _template_text(source) for source in sources}
    values_template = _template_text(project.stage_values_file)

    lines = text.splitlines(keepends=True)
    root = ve.compose_mapping(values_file, text)
    ve.read_values(values_file, text)  # a file that does not load (a duplicate key...) is refused as `ds`/`test` do
    region = ve.stages_region(values_file, root, lines)
    existing = set(region.names)
    index = ve.MarkerIndex(values_file, lines)
    block: List[str] = []
    files: Dict[str, Dict[str, str]] = {}
    for name in names:
        target = project.stages_dir / name
        if os.path.lexists(target):
            raise InputError(f"stage {name!r} already exists: {target}")
        if name in existing:
            raise InputError(f"stage {name!r} already has values under stages: in {values_file}")
        if index.has(name):
            raise InputError(f"{values_file} already has a {begin_marker(name)} block")
        block += _stage_values_block(project, values_template, name, region.indent)
        files[name] = {
            (source.name[1:] if source.name.startswith("_") else source.name): render_template(content, name, source)
            for source, content in templates.items()
        }
    new_text = "".join(ve.insert_lines(lines, region.end, block, ve.newline_of(text)))
    ve.check_size(values_file, new_text)
    landed = set(ve.stage_names_in(values_file, new_text))
    if not set(names) <= landed:
        raise InputError(f"{values_file}: the new block did not land under stages: (check its indentation)")
    return Scaffold(new_text, files)


def stage_folder(tx: journal.Transaction, project: Project, name: str, files: Dict[str, str]) -> Path:
    """Prepare a new stage folder in the transaction (it appears at commit)."""
    target = project.stages_dir / name
    staging = tx.new_folder(target)
    for out_name, content in files.items():
        with open(fsio.open_nofollow(staging / out_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "w",
                  encoding="utf-8", newline="") as handle:
            handle.write(content)
    os.chmod(staging, 0o755)
    return target


# --- the commands ----------------------------------------------------------------------


@dataclass
class StageChange:
    name: str
    stage_dir: Path
    values_file: Path
    notes: List[str] = field(default_factory=list)
    created_folders: List[Path] = field(default_factory=list)  # more_folders that were made


def workflows_using(data, name: str) -> List[str]:
    workflows = data.get("workflows") or {}
    if not isinstance(workflows, dict):
        return []
    return sorted(
        str(wf_id) for wf_id, wf in workflows.items()
        if isinstance(wf, dict) and isinstance(wf.get("stages"), list) and name in [str(s) for s in wf["stages"]]
    )


def create_stage(project: Project, name: str, *, more_folders: Optional[Dict[Path, Dict[str, str]]] = None) -> StageChange:
    """``cs``; ``more_folders`` (folder → file name → content, e.g. the stage's operator app)
    land in the same transaction, each unless it exists already (kept as it is)."""
    check_stage_name(name)
    values_file = project.values_file
    with chart_lock(project) as notes:
        text = ve.read_text(values_file)
        planned = scaffold(project, [name], text)
        tx = journal.Transaction(project.chart_dir, f"cs {name}")
        created = []
        try:
            target = stage_folder(tx, project, name, planned.files[name])
            for folder, files in (more_folders or {}).items():
                if os.path.lexists(folder):
                    continue
                folder.parent.mkdir(parents=True, exist_ok=True)
                staging = tx.new_folder(folder)
                for file_name, content in files.items():
                    (staging / file_name).parent.mkdir(parents=True, exist_ok=True)
                    with open(fsio.open_nofollow(staging / file_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "w",
                              encoding="utf-8", newline="") as handle:
                        handle.write(content)
                os.chmod(staging, 0o755)
                created.append(folder)
            tx.write(values_file, text, planned.text)
        except BaseException:
            tx.discard()
            raise
        tx.commit()
    return StageChange(name, target, values_file, notes, created)


def delete_stage(project: Project, name: str, force: bool = False, *,
                 also_remove: Optional[Callable[[], Sequence[Path]]] = None) -> StageChange:
    """``ds``; ``also_remove`` (asked under the chart lock, once the stage may go) names more
    folders to remove in the same transaction (the stage's untouched operator app)."""
    if name == TEMPLATE_STAGE:
        raise InputError("'template' is the folder new stages are copied from; it cannot be deleted")
    if not is_dns_label(name):
        raise InputError(f"no stage {name!r}: stage names are DNS-1123 labels (lower-case letters, digits, '-')")
    target = project.stages_dir / name
    values_file = project.values_file

    with chart_lock(project) as notes:
        text = ve.read_text(values_file)
        lines = text.splitlines(keepends=True)
        root = ve.compose_mapping(values_file, text)
        data = ve.read_values(values_file, text)
        stages = data.get("stages") or {}
        has_values = isinstance(stages, dict) and name in stages
        index = ve.MarkerIndex(values_file, lines)
        span = index.span(name)  # broken markers of this stage: refused with a message
        has_folder = target.is_dir() or target.is_symlink()
        if not has_folder and not has_values and span is None:
            known = ", ".join(list_stages(project)) or "none"
            raise InputError(f"no stage {name!r} (stages: {known})")
        users = workflows_using(data, name)
        if users and not force:
            raise InputError(
                f"stage {name!r} is used by workflow(s) {', '.join(users)}; "
                "remove it from them first, or pass --force"
            )

        new_text = text
        if has_values or span is not None:
            region = ve.stages_region(values_file, root, lines)
            if span is not None:
                ve.check_block_holds(values_file, region, span, name)
            else:
                span = ve.child_span(region, lines, name, own_comments=True)
            new_text = "".join(ve.remove_lines(lines, span))
            if name in ve.stage_names_in(values_file, new_text):
                raise InputError(f"{values_file}: could not isolate the values of stage {name!r}; remove them by hand")

        tx = journal.Transaction(project.chart_dir, f"ds {name}")
        try:
            if has_folder:
                tx.remove_folder(target)
            for folder in (also_remove() if also_remove else ()):
                tx.remove_folder(folder)
            tx.write(values_file, text, new_text)
        except BaseException:
            tx.discard()
            raise
        tx.commit()
    return StageChange(name, target, values_file, notes)


def stage_values(project: Project) -> Dict[str, dict]:
    data = ve.read_values(project.values_file)
    stages = data.get("stages") or {}
    return dict(stages) if isinstance(stages, dict) else {}
