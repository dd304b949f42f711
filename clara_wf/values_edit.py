"""values.yaml as text guided by the parser: the edits ``cs``, ``ds``, ``import`` and the benches make.

values.yaml is the user's file. It is parsed with ruamel.yaml (its C parser when present),
whose node tree keeps each key's line and column, and blocks are inserted or removed as
whole lines at the place the parser reports, so every other byte of the file (comments,
blank lines, key order, quoting, flow lists, CRLF) stays as it was. (A round-trip load and
dump would re-emit the whole file, and take ~10x longer.)

Untrusted YAML (values.yaml, ``_stage_values.yaml``, pipeline definitions) is read through
:func:`load` / :func:`compose`, which bound what a document may cost: alias expansion (a
"billion laughs" document is refused in milliseconds, before anything walks it), nesting
depth and self-referencing aliases, each refused with one line.

Names YAML 1.1 (Helm's YAML) reads as something else than a string — ``yes``, ``off``,
``123``, ``1e3``, ``0x1f``, ``null`` — are quoted where clara-wf writes them: :func:`scalar`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from clara_wf.errors import InputError

# Helm refuses a chart whose values (with everything else in the release) pass 5 MB (its
# release-size limit is on the Secret, ~1 MiB compressed; `helm template` itself reads
# values of any size, but every workflow then fails to install). Refuse before writing.
MAX_VALUES_BYTES = 5 * 1024 * 1024
# A document may repeat itself through aliases, within reason: this many nodes beyond those
# written out (a billion-laughs document expands to 10^9 and more).
MAX_ALIAS_EXPANSION = 100_000
# Deeper than this, a document is not configuration (and Python's parser would recurse away).
MAX_DEPTH = 64


# --- parsing, bounded ------------------------------------------------------------------


def fast_yaml():
    """ruamel's C-accelerated safe parser (ruamel.yaml.clib) when present: ~10x faster."""
    from ruamel.yaml import YAML

    try:
        return YAML(typ="safe", pure=False)
    except Exception:  # no C extension: the pure-Python parser gives the same nodes
        return YAML(typ="safe", pure=True)


def yaml_error(path: Path, err) -> InputError:
    """One line for a parser error: the file, line and column, and the problem."""
    mark = getattr(err, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(err, "problem", None) or (str(err).splitlines() or [type(err).__name__])[0]
    duplicate = re.match(r'found duplicate key "(.*)" with value', str(problem))
    if duplicate:
        line = f" on line {mark.line + 1}" if mark else ""
        return InputError(f"{path}: duplicate key {duplicate.group(1)!r}{line}: remove one of them")
    return InputError(f"{path} is not valid YAML{where}: {problem}")


def read_text(path: Path, what: str = "") -> str:
    """The file's text with its own line endings (CRLF stays CRLF); one line when unreadable."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"{path} is missing{what}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a file") from None
    except PermissionError:
        raise InputError(f"{path} cannot be read: permission denied") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason})") from None


def _check_bounds(path: Path, root) -> None:
    """Refuse self-referencing aliases, nesting deeper than MAX_DEPTH and alias expansion past
    MAX_ALIAS_EXPANSION nodes; iterative (no recursion), linear in the distinct nodes."""
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    def children_of(node) -> List[Any]:
        if isinstance(node, MappingNode):
            return [part for pair in node.value for part in pair]
        if isinstance(node, SequenceNode):
            return list(node.value)
        return []

    def line_of(node) -> str:
        return str(node.start_mark.line + 1) if getattr(node, "start_mark", None) else "?"

    size: Dict[int, int] = {}  # node id -> its size once every alias is expanded
    height: Dict[int, int] = {}
    on_path: set = set()
    stack: List[Tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = children_of(node)
            size[key] = 1 + sum(size[id(c)] for c in kids)
            height[key] = 1 + max((height[id(c)] for c in kids), default=0)
            if height[key] > MAX_DEPTH:
                raise InputError(f"{path} nests deeper than {MAX_DEPTH} levels (line {line_of(node)})")
            continue
        if key in size:
            continue
        if key in on_path:
            raise InputError(f"{path}: the alias at line {line_of(node)} refers to a node that contains it "
                             "(a self-referencing document never ends)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children_of(node) if id(c) not in size)
    written = len(size)
    total = size[id(root)]
    if total - written > MAX_ALIAS_EXPANSION:
        raise InputError(f"{path}: its aliases expand it to {total:,} values from {written:,} written; "
                         f"refusing a document that multiplies itself (at most {MAX_ALIAS_EXPANSION:,} more)")


def compose(path: Path, text: str):
    """The document's node tree (keys with line and column, nothing constructed), bounded."""
    from ruamel.yaml.error import YAMLError

    if "\x00" in text:
        raise InputError(f"{path} is not a YAML text file (it holds a NUL byte)")
    try:
        root = fast_yaml().compose(text)
    except YAMLError as err:
        raise yaml_error(path, err) from None
    except RecursionError:
        raise InputError(f"{path} nests deeper than {MAX_DEPTH} levels") from None
    if root is not None:
        _check_bounds(path, root)
    return root


def load(path: Path, text: Optional[str] = None) -> Any:
    """The document as plain data, bounded (see module doc); duplicate keys refused."""
    from ruamel.yaml.error import YAMLError

    text = read_text(path) if text is None else text
    root = compose(path, text)
    if root is None:
        return None
    try:
        return fast_yaml().constructor.construct_document(root)
    except YAMLError as err:
        raise yaml_error(path, err) from None
    except RecursionError:
        raise InputError(f"{path} nests deeper than {MAX_DEPTH} levels") from None
    except (TypeError, ValueError) as err:  # e.g. a list as a mapping key
        raise InputError(f"{path} is not usable YAML: {err}") from None


def read_values(path: Path, text: Optional[str] = None) -> dict:
    """values.yaml as plain data; InputError when it is not a YAML mapping."""
    data = load(path, text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path} must be a YAML mapping at the top level")
    return data


def compose_mapping(path: Path, text: str):
    """The node tree of a document that must be a mapping (or empty: None)."""
    from ruamel.yaml.nodes import MappingNode

    root = compose(path, text)
    if root is not None and not isinstance(root, MappingNode):
        raise InputError(f"{path} must be a YAML mapping at the top level")
    return root


# --- YAML 1.1 scalars ---------------------------------------------------------------------

# What YAML 1.1 (Helm, go-yaml) resolves to something other than a string when unquoted.
_YAML11_NONSTRING = re.compile(
    r"""^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF
    |null|Null|NULL|~|
    |[-+]?(?:0b[0-1_]+|0[0-7_]+|(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|[1-9][0-9_]*(?::[0-5]?[0-9])+)
    |[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)
    |[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}.*|=|<<)$""",
    re.X,
)


def reads_as_string(text: str) -> bool:
    """True when ``text`` unquoted is a string to YAML 1.1 and 1.2 alike."""
    return _YAML11_NONSTRING.match(text) is None


def scalar(text: str) -> str:
    """``text`` as a YAML scalar that every YAML reads back as that string (quoted if need be)."""
    import json

    if text and reads_as_string(text) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_./-]*", text):
        return text
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


# --- regions of the text ------------------------------------------------------------------


def node_keys(node) -> List[Tuple[str, int, int]]:
    """(key, line, column) of a mapping node's keys, in file order; a repeated key is refused
    (YAML forbids it, and which of the two an edit should touch would be a guess)."""
    keys = [(str(k.value), k.start_mark.line, k.start_mark.column) for k, _ in node.value]
    seen: Dict[str, int] = {}
    for key, line, _ in keys:
        if key in seen:
            raise InputError(f"duplicate key {key!r} on lines {seen[key] + 1} and {line + 1}: remove one of them")
        seen[key] = line
    return keys


def child(node, key: str):
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

    @property
    def names(self) -> List[str]:
        return [k for k, _, _ in self.children]


def mapping_region(path: Path, root, lines: List[str], key: str) -> MappingRegion:
    """Where the top-level block mapping ``key`` sits in the text (lines, child indentation).

    A null value (``key:`` alone) is an empty mapping; flow style cannot be edited by lines.
    """
    from ruamel.yaml.nodes import MappingNode, ScalarNode

    try:
        top = node_keys(root) if root is not None else []
        node = child(root, key) if root is not None else None
        children = node_keys(node) if isinstance(node, MappingNode) else []
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    names = [k for k, _, _ in top]
    if key not in names:
        raise InputError(f"{path} has no top-level '{key}:' mapping")
    is_null = isinstance(node, ScalarNode) and str(node.tag).endswith(":null")
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
    names = region.names
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


def stages_region(path: Path, root, lines: List[str]) -> MappingRegion:
    """Where the stages mapping sits in the text."""
    try:
        return mapping_region(path, root, lines, "stages")
    except InputError as err:
        if "has no top-level" in str(err):
            raise InputError(f"{path} has no top-level 'stages:' mapping to add stage values to") from None
        raise


def stage_names_in(path: Path, text: str) -> List[str]:
    """The keys of ``stages:`` in ``text`` (empty when it is missing or not a block mapping)."""
    from ruamel.yaml.nodes import MappingNode

    root = compose(path, text)
    stages = child(root, "stages") if root is not None else None
    return [k for k, _, _ in node_keys(stages)] if isinstance(stages, MappingNode) else []


def newline_of(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def check_size(path: Path, text: str) -> None:
    """Refuse a values.yaml Helm would not take, before it is written."""
    size = len(text.encode("utf-8"))
    if size > MAX_VALUES_BYTES:
        raise InputError(f"{path} would grow to {size / 1048576:.1f} MB, past Helm's "
                         f"{MAX_VALUES_BYTES // 1048576} MB limit on a chart's values: nothing was written")


# --- stage marker blocks --------------------------------------------------------------------


def begin_marker(name: str) -> str:
    return f"##BEGIN_{name}##"


def end_marker(name: str) -> str:
    return f"##END_{name}##"


_MARKER = re.compile(r"^\s*##(BEGIN|END)_(.+)##\s*$")


def markers(lines: Iterable[str]) -> List[Tuple[int, str, str]]:
    """(line, "BEGIN"/"END", name) of every marker line."""
    found = []
    for number, line in enumerate(lines):
        if "##" in line:
            match = _MARKER.match(line)
            if match:
                found.append((number, match.group(1), match.group(2)))
    return found


class MarkerIndex:
    """Every stage's marker pair, checked once: duplicated, unpaired, reversed or crossing
    pairs are reported by name (an edit between wrong markers would cut another stage)."""

    def __init__(self, path: Path, lines: List[str]):
        self.path = path
        self.pairs: Dict[str, range] = {}
        self.problems: Dict[str, str] = {}
        begins: Dict[str, List[int]] = {}
        ends: Dict[str, List[int]] = {}
        found = markers(lines)
        for number, kind, name in found:
            (begins if kind == "BEGIN" else ends).setdefault(name, []).append(number)
        for name in set(begins) | set(ends):
            b, e = begins.get(name, []), ends.get(name, [])
            if len(b) > 1 or len(e) > 1:
                self.problems[name] = (f"{begin_marker(name)} appears {len(b)} times and {end_marker(name)} "
                                       f"{len(e)} times (lines {', '.join(str(n + 1) for n in sorted(b + e))})")
            elif not b or not e:
                have, miss = (begin_marker(name), end_marker(name)) if b else (end_marker(name), begin_marker(name))
                self.problems[name] = f"{have} (line {(b or e)[0] + 1}) has no {miss}"
            elif e[0] < b[0]:
                self.problems[name] = (f"{end_marker(name)} (line {e[0] + 1}) comes before "
                                       f"{begin_marker(name)} (line {b[0] + 1})")
            else:
                self.pairs[name] = range(b[0], e[0] + 1)
        for name, span in list(self.pairs.items()):
            inside = [(n, kind, other) for n, kind, other in found if span.start < n < span.stop - 1]
            if inside:
                n, kind, other = inside[0]
                self.problems[name] = (f"the {name} block (lines {span.start + 1}-{span.stop}) holds "
                                       f"##{kind}_{other}## (line {n + 1}): the markers cross")
                self.problems.setdefault(other, self.problems[name])
        for name in self.problems:
            self.pairs.pop(name, None)

    def span(self, name: str) -> Optional[range]:
        """The block's lines (markers included); None when there is no marker of ``name``."""
        if name in self.problems:
            raise InputError(f"{self.path}: the markers of stage {name!r} are broken: {self.problems[name]}; "
                             "fix them by hand")
        return self.pairs.get(name)

    def has(self, name: str) -> bool:
        return name in self.pairs or name in self.problems


def marker_span(path: Path, lines: List[str], name: str) -> Optional[range]:
    return MarkerIndex(path, lines).span(name)


def check_block_holds(path: Path, region: MappingRegion, span: range, name: str) -> None:
    """A stage's marker block must hold its own key under stages: and no other stage's."""
    keys = [k for k, line, _ in region.children if span.start < line < span.stop - 1]
    if keys != [name]:
        other = [k for k in keys if k != name]
        what = f"holds the values of {', '.join(map(repr, other))}" if other else f"does not hold stages.{name}"
        raise InputError(f"{path}: the {begin_marker(name)} block (lines {span.start + 1}-{span.stop}) {what}: "
                         "a marker is misplaced; fix it by hand")


def insert_lines(lines: List[str], at: int, block: List[str], newline: str) -> List[str]:
    """``lines`` with ``block`` inserted before line ``at``, keeping a missing final newline missing."""
    lines = list(lines)
    block = [line[:-1].rstrip("\r") + newline if line.endswith("\n") else line for line in block]
    if at > 0 and at == len(lines) and not lines[at - 1].endswith("\n") and block:
        lines[at - 1] += newline
        block[-1] = block[-1].rstrip("\r\n")
    elif at > 0 and not lines[at - 1].endswith("\n"):
        lines[at - 1] += newline
    return lines[:at] + block + lines[at:]


def remove_lines(lines: List[str], span: range) -> List[str]:
    kept = lines[: span.start] + lines[span.stop:]
    if span.stop == len(lines) and lines and not lines[-1].endswith("\n") and kept:
        kept[-1] = kept[-1].rstrip("\r\n")  # the file ended without a newline: so it does again
    return kept
