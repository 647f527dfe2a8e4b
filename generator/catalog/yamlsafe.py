"""Load a catalog YAML file safely, keeping the line and column of every value.

The file is read with PyYAML's safe loader (the C one when available). Before the node graph is
built, the event stream is checked for size, nesting depth and alias use, so that neither an
oversized file nor an alias bomb can exhaust memory. The nodes are then turned into plain Python
data (dicts with string keys, lists, str/int/float/bool/None/date) while a map from each value's
path, e.g. ``("memory", "usable", "mib")``, to its 1-based (line, column) is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

MAX_BYTES = 1 << 20  # 1 MiB: the largest catalog file is a few KiB
MAX_NODES = 5000  # nodes after alias expansion
MAX_DEPTH = 32
MAX_ALIASES = 20

if TYPE_CHECKING:
    # Checked against the pure-Python loader, whose interface the C one (when built) mirrors.
    _Base = yaml.SafeLoader
else:
    _Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

DataPath = tuple[str | int, ...]
Position = tuple[int, int]

_SCALAR_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "timestamp")}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


class SafeLoader(_Base):
    """PyYAML's safe loader; a subclass so that nothing here changes the global one."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file, printed as ``path:line:column: message``."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class YamlProblem(Exception):
    """A file that cannot be turned into data at all (the position is within the file)."""

    def __init__(self, line: int, column: int, message: str):
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


@dataclass
class Document:
    """Parsed data plus where each value (and each mapping key) sits in the file."""

    data: Any
    first_line: str = ""
    values: dict[DataPath, Position] = field(default_factory=dict)
    keys: dict[DataPath, Position] = field(default_factory=dict)

    def position(self, path: DataPath) -> Position:
        """Where `path` is written: the key of a mapping entry, else the value; for a path that does
        not exist (a missing field), the nearest enclosing one."""
        for end in range(len(path), -1, -1):
            prefix = tuple(path[:end])
            if prefix in self.keys:
                return self.keys[prefix]
            if prefix in self.values:
                return self.values[prefix]
        return (1, 1)


class _Mark(Protocol):
    """A position in the input: PyYAML's Mark, or the C loader's (a different class)."""

    line: int  # 0-based
    column: int  # 0-based


def _pos(mark: _Mark | None) -> Position:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _text_position(text: str, offset: int) -> Position:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _error_from_yaml(exc: yaml.YAMLError, text: str) -> YamlProblem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        parts = [p for p in (exc.context, exc.problem) if p]
        return YamlProblem(*_pos(mark), "YAML syntax error: " + ("; ".join(parts) or str(exc)))
    position = getattr(exc, "position", None)  # ReaderError: an unacceptable character
    line, col = _text_position(text, position) if isinstance(position, int) else (1, 1)
    reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
    return YamlProblem(line, col, f"YAML syntax error: {reason}")


def _precheck(text: str) -> None:
    """Walk the event stream (no node graph yet) to bound nesting depth, node count and aliases."""
    depth = nodes = aliases = 0
    for event in yaml.parse(text, Loader=SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlProblem(*_pos(event.start_mark), f"nesting deeper than {MAX_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise YamlProblem(*_pos(event.start_mark),
                                  f"more than {MAX_ALIASES} YAML aliases; write the values out instead")
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_NODES:
                raise YamlProblem(*_pos(event.start_mark), f"document has more than {MAX_NODES} values")


class _Converter:
    def __init__(self, loader: SafeLoader):
        self.loader = loader
        self.doc = Document(data=None)
        self.count = 0
        self.active: set[int] = set()  # ids of collection nodes being converted (alias cycles)

    def convert(self, node: yaml.Node, path: DataPath) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise YamlProblem(*_pos(node.start_mark),
                              f"document expands to more than {MAX_NODES} values (YAML aliases?)")
        self.doc.values.setdefault(path, _pos(node.start_mark))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if id(node) in self.active:
            raise YamlProblem(*_pos(node.start_mark), "recursive YAML alias")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
                return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
                return self._mapping(node, path)
            raise YamlProblem(*_pos(node.start_mark), f"unsupported YAML tag {node.tag}")
        finally:
            self.active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag not in _SCALAR_TAGS:
            if node.tag == "tag:yaml.org,2002:merge":
                raise YamlProblem(*_pos(node.start_mark), "YAML merge keys (<<) are not supported")
            raise YamlProblem(*_pos(node.start_mark), f"unsupported YAML tag {node.tag}")
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            raise YamlProblem(*_pos(node.start_mark), f"invalid value {node.value!r}: {exc}") from None

    def _mapping(self, node: yaml.MappingNode, path: DataPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlProblem(*_pos(key_node.start_mark), "mapping keys must be plain strings")
            key = self._scalar(key_node)
            if not isinstance(key, str):
                raise YamlProblem(*_pos(key_node.start_mark),
                                  f"mapping key {key_node.value!r} is read as {type(key).__name__}, "
                                  "not a string; quote it")
            key_path: DataPath = (*path, key)
            if key in out:
                first = self.doc.keys[key_path]
                raise YamlProblem(*_pos(key_node.start_mark),
                                  f"duplicate key {key!r} (first defined on line {first[0]})")
            self.doc.keys[key_path] = _pos(key_node.start_mark)
            out[key] = self.convert(value_node, key_path)
        return out


def parse_yaml(text: str) -> Document:
    """Parse one YAML document into a Document, or raise YamlProblem."""
    try:
        _precheck(text)
        loader = SafeLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _error_from_yaml(exc, text) from None
    if node is None:
        raise YamlProblem(1, 1, "file is empty")
    converter = _Converter(loader)
    converter.doc.data = converter.convert(node, ())
    converter.doc.first_line = text.lstrip("\ufeff").split("\n", 1)[0].rstrip("\r")
    return converter.doc


def read_yaml(path: Path) -> Document:
    """Read and parse a file, refusing oversized or non-UTF-8 input; raise YamlProblem."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise YamlProblem(1, 1, f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise YamlProblem(1, 1, f"file is larger than {MAX_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8", "replace")
        line, col = _text_position(before, len(before))
        raise YamlProblem(line, col, "file is not valid UTF-8") from None
    return parse_yaml(text)
