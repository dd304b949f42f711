"""Stages of the clara-workflow chart: list, scaffold (``cs``) and delete (``ds``).

A stage is a folder ``templates/stages/NAME`` (container.yaml, volume.yaml) plus a block
of default values under ``stages:`` in values.yaml, between ``##BEGIN_NAME##`` and
``##END_NAME##`` lines. ``cs`` renders both from ``stages/template`` and
``_stage_values.yaml`` with jinja2, whose delimiters are set to ``[[= … =]]`` so that
they can never collide with Helm's ``{{ … }}``.

values.yaml is the user's file: it is parsed with ruamel.yaml (its C parser, whose node
tree keeps each key's line and column), and the stage block is inserted or removed as
whole lines at the place the parser reports, so every other byte of the file (comments,
blank lines, key order, quoting, flow lists) stays exactly as it was. (A round-trip
load and dump would re-emit the whole file; parsing a 100-stage values.yaml that way
also took ~0.5 s against ~50 ms.) The result is parsed again before it
replaces the file. Both changes (folder and values) happen under a lock on the chart
folder and are each a rename, so a failure midway leaves neither.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from clara_wf.errors import InputError
from clara_wf.project import TEMPLATE_STAGE, Project

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def is_dns_label(name: str, max_length: int = 63) -> bool:
    """Lower-case letters, digits and '-', alphanumeric at both ends (container, release names)."""
    return len(name) <= max_length and _DNS_LABEL.fullmatch(name) is not None
TMP_PREFIX = ".tmp-"  # ignored by list_stages and by .helmignore


def begin_marker(name: str) -> str:
    return f"##BEGIN_{name}##"


def end_marker(name: str) -> str:
    return f"##END_{name}##"


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


# --- values.yaml as text guided by the round-trip parser ---------------------------------


def _fast_yaml():
    """ruamel's C-accelerated safe parser (ruamel.yaml.clib) when present: ~10x faster."""
    from ruamel.yaml import YAML

    try:
        return YAML(typ="safe", pure=False)
    except Exception:  # no C extension: the pure-Python parser gives the same nodes
        return YAML(typ="safe", pure=True)


def _yaml_error(path: Path, err) -> InputError:
    mark = getattr(err, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return InputError(f"{path} is not valid YAML{where}: {problem}")


def _read_text(path: Path) -> str:
    """The file's text with its own line endings (CRLF stays CRLF)."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"{path} is missing") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a file") from None
    except PermissionError:
        raise InputError(f"{path} cannot be read: permission denied") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None


def read_values(path: Path, text: Optional[str] = None) -> dict:
    """values.yaml as plain data (fast); InputError when it is not a YAML mapping."""
    from ruamel.yaml.error import YAMLError

    text = _read_text(path) if text is None else text
    try:
        data = _fast_yaml().load(text)
    except YAMLError as err:
        raise _yaml_error(path, err) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path} must be a YAML mapping at the top level")
    return data


def _compose(path: Path, text: str):
    """The document's node tree: keys with their line and column, without building objects."""
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.nodes import MappingNode

    try:
        root = _fast_yaml().compose(text)
    except YAMLError as err:
        raise _yaml_error(path, err) from None
    if root is None:
        return None
    if not isinstance(root, MappingNode):
        raise InputError(f"{path} must be a YAML mapping at the top level")
    return root


def _node_keys(node) -> List[Tuple[str, int, int]]:
    """(key, line, column) of a mapping node's keys, in file order; a repeated key is refused
    (YAML forbids it, and which of the two an edit should touch would be a guess)."""
    keys = [(str(k.value), k.start_mark.line, k.start_mark.column) for k, _ in node.value]
    seen = {}
    for key, line, _ in keys:
        if key in seen:
            raise InputError(f"duplicate key {key!r} on lines {seen[key] + 1} and {line + 1}: remove one of them")
        seen[key] = line
    return keys


def _child(node, key: str):
    for k, v in node.value:
        if str(k.value) == key:
            return v
    return None


@dataclass
class MappingRegion:
    key_line: int  # line of the key ("stages:")
    first: int  # first line after it
    end: int  # one past the last line that belongs to the mapping
    indent: int  # indentation of its entries
    children: List[Tuple[str, int, int]] = field(default_factory=list)  # (key, line, column)


def mapping_region(path: Path, root, lines: List[str], key: str) -> MappingRegion:
    """Where the top-level block mapping ``key`` sits in the text (lines, child indentation).

    A null value (``key:`` alone) is an empty mapping; flow style cannot be edited by lines.
    """
    from ruamel.yaml.nodes import MappingNode, ScalarNode

    try:
        top = _node_keys(root) if root is not None else []
        node = _child(root, key) if root is not None else None
        children = _node_keys(node) if isinstance(node, MappingNode) else []
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    names = [k for k, _, _ in top]
    if key not in names:
        raise InputError(f"{path} has no top-level '{key}:' mapping")
    is_null = isinstance(node, ScalarNode) and node.tag.endswith(":null")
    if not is_null and not isinstance(node, MappingNode):
        raise InputError(f"{path}: '{key}' must be a mapping")
    if isinstance(node, MappingNode) and node.flow_style:
        raise InputError(
            f"{path}: '{key}:' is written in flow style ({{...}}); "
            "write it as a block mapping (one entry per line) so that clara-wf can edit it"
        )
    index = names.index(key)
    key_line = top[index][1]
    end = top[index + 1][1] if index + 1 < len(top) else len(lines)
    # Blank lines and unindented comments just before the next top-level key belong to it.
    while end > key_line + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    indent = children[0][2] if children else 2
    return MappingRegion(key_line=key_line, first=key_line + 1, end=end, indent=indent, children=children)


def child_span(region: MappingRegion, lines: List[str], name: str, *, own_comments: bool = False) -> range:
    """Lines of one entry of a mapping region: its key up to the next sibling key.

    Trailing blank lines belong to what follows; with ``own_comments``, so do trailing
    comments indented no deeper than the entries (they introduce the next one).
    """
    names = [k for k, _, _ in region.children]
    index = names.index(name)
    start = region.children[index][1]
    stop = region.children[index + 1][1] if index + 1 < len(names) else region.end
    while stop > start + 1:
        line = lines[stop - 1]
        comment = line.lstrip().startswith("#") and len(line) - len(line.lstrip()) <= region.indent
        if not line.strip() or (own_comments and comment):
            stop -= 1
        else:
            break
    return range(start, stop)


def _stages_region_of(path: Path, root, lines: List[str]) -> Tuple[MappingRegion, List[str]]:
    """Where the stages mapping sits in the text, and the stage names it holds."""
    try:
        region = mapping_region(path, root, lines, "stages")
    except InputError as err:
        if "has no top-level" in str(err):
            raise InputError(f"{path} has no top-level 'stages:' mapping to add stage values to") from None
        raise
    return region, [k for k, _, _ in region.children]


def _stage_names_in(path: Path, text: str) -> List[str]:
    root = _compose(path, text)
    stages = _child(root, "stages") if root is not None else None
    return [k for k, _, _ in _node_keys(stages)] if stages is not None and hasattr(stages, "flow_style") and isinstance(stages.value, list) else []


def _render(text: str, name: str, source: Path) -> str:
    import jinja2

    env = jinja2.Environment(
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
    try:
        return env.from_string(text).render(name=name)
    except jinja2.TemplateError as err:
        raise InputError(f"{source}: cannot fill in the stage name: {err}") from None


def _stage_values_block(project: Project, name: str, indent: int) -> List[str]:
    source = project.stage_values_file
    if not source.is_file():
        raise InputError(f"{source} is missing: it holds the default values of a new stage")
    block = _render(source.read_text(encoding="utf-8"), name, source)
    parsed = read_values(source, block)
    if list(parsed.keys()) != [name]:
        raise InputError(f"{source} must hold exactly one mapping, keyed by the stage name ([[= name =]])")
    lines = block.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    if not any(line.strip() == begin_marker(name) for line in lines):
        lines = [begin_marker(name) + "\n", *lines, end_marker(name) + "\n"]
    pad = " " * indent
    return [pad + line if line.strip() else line for line in lines]


def _marker_span(lines: List[str], name: str) -> Optional[range]:
    begin = end = None
    for number, line in enumerate(lines):
        if line.strip() == begin_marker(name) and begin is None:
            begin = number
        elif line.strip() == end_marker(name) and begin is not None:
            end = number
            break
    return range(begin, end + 1) if begin is not None and end is not None else None


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _chart_lock(project: Project) -> Iterator[None]:
    """Serialise edits of one chart (two ``cs`` at once must both land)."""
    fd = os.open(project.chart_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# --- the commands ----------------------------------------------------------------------


@dataclass
class StageChange:
    name: str
    stage_dir: Path
    values_file: Path


def workflows_using(data, name: str) -> List[str]:
    workflows = data.get("workflows") or {}
    if not isinstance(workflows, dict):
        return []
    return sorted(
        str(wf_id) for wf_id, wf in workflows.items()
        if isinstance(wf, dict) and isinstance(wf.get("stages"), list) and name in wf["stages"]
    )


def create_stage(project: Project, name: str) -> StageChange:
    check_stage_name(name)
    template = project.template_dir
    if not template.is_dir():
        raise InputError(f"{template} is missing: it is the folder new stages are copied from")
    sources = sorted(p for p in template.iterdir() if p.is_file())
    if not sources:
        raise InputError(f"{template} has no files to copy")
    target = project.stages_dir / name
    values_file = project.values_file

    with _chart_lock(project):
        if target.exists():
            raise InputError(f"stage {name!r} already exists: {target}")
        text = _read_text(values_file)
        lines = text.splitlines(keepends=True)
        region, existing = _stages_region_of(values_file, _compose(values_file, text), lines)
        if name in existing:
            raise InputError(f"stage {name!r} already has values under stages: in {values_file}")
        if _marker_span(lines, name):
            raise InputError(f"{values_file} already has a {begin_marker(name)} block")

        newline = "\r\n" if "\r\n" in text else "\n"
        block = [line[:-1] + newline if line.endswith("\n") else line
                 for line in _stage_values_block(project, name, region.indent)]
        if region.end > 0 and not lines[region.end - 1].endswith("\n"):
            # No final newline: the block goes after a new one and keeps the file ending without.
            lines[region.end - 1] += newline
            block[-1] = block[-1].rstrip("\r\n")
        new_text = "".join(lines[: region.end] + block + lines[region.end:])
        if name not in _stage_names_in(values_file, new_text):
            raise InputError(f"{values_file}: the new block did not land under stages: (check its indentation)")

        rendered = {}
        for source in sources:
            out_name = source.name[1:] if source.name.startswith("_") else source.name
            rendered[out_name] = _render(source.read_text(encoding="utf-8"), name, source)

        staging = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{name}-", dir=project.stages_dir))
        try:
            for out_name, content in rendered.items():
                (staging / out_name).write_text(content, encoding="utf-8")
            os.chmod(staging, 0o755)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            _atomic_write(values_file, new_text)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
    return StageChange(name, target, values_file)


def delete_stage(project: Project, name: str, force: bool = False) -> StageChange:
    if name == TEMPLATE_STAGE:
        raise InputError("'template' is the folder new stages are copied from; it cannot be deleted")
    if not is_dns_label(name):
        raise InputError(f"no stage {name!r}: stage names are DNS-1123 labels (lower-case letters, digits, '-')")
    target = project.stages_dir / name
    values_file = project.values_file

    with _chart_lock(project):
        text = _read_text(values_file)
        lines = text.splitlines(keepends=True)
        root = _compose(values_file, text)
        data = read_values(values_file, text)
        stages = data.get("stages") or {}
        has_values = isinstance(stages, dict) and name in stages
        if not target.is_dir() and not has_values:
            known = ", ".join(list_stages(project)) or "none"
            raise InputError(f"no stage {name!r} (stages: {known})")
        users = workflows_using(data, name)
        if users and not force:
            raise InputError(
                f"stage {name!r} is used by workflow(s) {', '.join(users)}; "
                "remove it from them first, or pass --force"
            )

        new_text = text
        if has_values:
            region, _ = _stages_region_of(values_file, root, lines)
            span = _marker_span(lines, name) or child_span(region, lines, name, own_comments=True)
            kept = lines[: span.start] + lines[span.stop:]
            if span.stop == len(lines) and not lines[-1].endswith("\n") and kept:
                kept[-1] = kept[-1].rstrip("\r\n")  # the file ended without a newline: so it does again
            new_text = "".join(kept)
            if name in _stage_names_in(values_file, new_text):
                raise InputError(f"{values_file}: could not isolate the values of stage {name!r}; remove them by hand")

        trash = None
        if target.is_dir():
            trash = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}deleted-{name}-", dir=project.stages_dir))
            os.rename(target, trash / name)
        try:
            if new_text != text:
                _atomic_write(values_file, new_text)
        except BaseException:
            if trash is not None:
                os.rename(trash / name, target)
                shutil.rmtree(trash, ignore_errors=True)
            raise
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    return StageChange(name, target, values_file)


def stage_values(project: Project) -> Dict[str, dict]:
    data = read_values(project.values_file)
    stages = data.get("stages") or {}
    return dict(stages) if isinstance(stages, dict) else {}
