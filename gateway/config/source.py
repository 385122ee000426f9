"""Strict YAML with positions.

Files are composed into PyYAML's node tree (never with PyYAML's global loader changed) and
turned into plain JSON-like data by hand, so that every value keeps its line and column under
its JSON pointer. Duplicate keys and keys YAML reads as something other than a string (an
unquoted `on:` is a boolean in YAML 1.1) are errors, reported with every other problem.
A document with such a problem goes no further, but the kind and name it declares are told,
so that what refers to it is not reported again as unknown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from gateway.core import pointer as ptr
from gateway.core.errors import Diagnostic

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_constructor = SafeConstructor()

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_NULL = "tag:yaml.org,2002:null"
_SCALARS = {
    "tag:yaml.org,2002:null": _constructor.construct_yaml_null,
    "tag:yaml.org,2002:bool": _constructor.construct_yaml_bool,
    "tag:yaml.org,2002:int": _constructor.construct_yaml_int,
    "tag:yaml.org,2002:float": _constructor.construct_yaml_float,
}
# Dates stay text: the config is JSON data, and the schema and compiler decide what a date is.
_AS_TEXT = {_STR, "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:binary"}

Position = tuple[int, int]
# A document's kind and name (a settings document's name is "").
Named = tuple[str, str]


class DocumentKind(StrEnum):
    """The kinds of document, as their `kind:` says: the one place their names are written
    (the compiler's table in `gateway/compiler/kinds.py` gives each its declaration and
    build; everything else names a kind through this enum)."""

    SETTINGS = "settings"
    OPTION_SET = "option_set"
    DATA_TYPE = "data_type"
    CUSTOM_EVENT = "custom_event"
    API_WORKFLOW = "api_workflow"
    RECURRING_EVENT = "recurring_event"
    DATABASE_TRIGGER = "database_trigger"
    WORKFLOW_TEST = "workflow_test"
# Nodes an alias may re-expand in one document: anchors nested in anchors multiply (nine
# levels of nine aliases is 387 million nodes), so building stops well before memory does.
MAX_ALIAS_NODES = 10_000


class _AliasLimit(Exception):
    """Building stops: `pointer` is where an alias went past the limit (or into itself)."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(message)
        self.pointer = pointer
        self.message = message


@dataclass(frozen=True, slots=True)
class Document:
    """One YAML document: its data and where each value (and each mapping key) stands."""

    file: str
    index: int
    data: Any
    positions: Mapping[str, Position] = field(default_factory=dict)
    key_positions: Mapping[str, Position] = field(default_factory=dict)
    # Steps (`/steps/<n>`) that failed the schema: the compiler passes them by.
    broken: frozenset[str] = frozenset()

    def locate(self, pointer: str, *, key: bool = False) -> Position:
        """The position of `pointer`, or of its nearest ancestor that has one."""
        if key and pointer in self.key_positions:
            return self.key_positions[pointer]
        while True:
            if pointer in self.positions:
                return self.positions[pointer]
            if not pointer:
                return (1, 1)
            pointer = ptr.parent(pointer)

    def diagnostic(self, pointer: str, code: str, message: str, *, key: bool = False,
                   severity: str = "error") -> Diagnostic:
        line, column = self.locate(pointer, key=key)
        return Diagnostic(self.file, line, column, code, message, pointer, severity)


def _mark(node: yaml.Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns one composed node tree into data, positions and diagnostics."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.positions: dict[str, Position] = {}
        self.key_positions: dict[str, Position] = {}
        self.diagnostics: list[Diagnostic] = []
        self.seen: set[int] = set()  # nodes built once: building one again expands an alias
        self.open: set[int] = set()  # nodes being built (an alias to one of them is a loop)
        self.expanded = 0

    def error(self, node: yaml.Node, pointer: str, code: str, message: str) -> None:
        line, column = _mark(node)
        self.diagnostics.append(Diagnostic(self.file, line, column, code, message, pointer))

    def build(self, node: yaml.Node, pointer: str) -> Any:
        self.positions[pointer] = _mark(node)
        if isinstance(node, yaml.ScalarNode):
            self.count(node, pointer)
            return self.scalar(node, pointer)
        self.count(node, pointer)
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, pointer)
            return [self.build(item, ptr.join(pointer, i)) for i, item in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def count(self, node: yaml.Node, pointer: str) -> None:
        if id(node) in self.open:
            raise _AliasLimit(pointer, "an alias refers to a node that contains it (a "
                                       "recursive alias)")
        if id(node) not in self.seen:
            self.seen.add(id(node))
            return
        self.expanded += 1
        if self.expanded > MAX_ALIAS_NODES:
            raise _AliasLimit(pointer, f"aliases expand to more than {MAX_ALIAS_NODES} nodes "
                                       "(anchors nested in anchors?)")

    def locate_key(self, pointer: str) -> Position:
        """Where the mapping key nearest above `pointer` stands: where an alias was used."""
        while pointer and pointer not in self.key_positions:
            pointer = ptr.parent(pointer)
        return self.key_positions.get(pointer, (1, 1))

    def scalar(self, node: yaml.ScalarNode, pointer: str) -> Any:
        if node.tag in _AS_TEXT:
            return node.value
        construct = _SCALARS.get(node.tag)
        if construct is None:
            self.error(node, pointer, "yaml.unknown-tag", f"unsupported YAML tag '{node.tag}'")
            return None
        return construct(node)

    def mapping(self, node: yaml.MappingNode, pointer: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        # Merged values first, so that explicit keys keep their own positions.
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged.update(self.merge_source(value_node, pointer))
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.key(key_node, pointer)
            if key is None:
                continue
            child = ptr.join(pointer, key)
            if key in result:
                line = self.key_positions[child][0]
                self.error(key_node, child, "yaml.duplicate-key",
                           f"duplicate key '{key}' (first defined on line {line})")
                continue
            self.key_positions[child] = _mark(key_node)
            result[key] = self.build(value_node, child)
        return {**merged, **result}

    def merge_source(self, node: yaml.Node, pointer: str) -> dict[str, Any]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                self.error(source, pointer, "yaml.bad-merge", "a merge key '<<' takes a mapping")
                continue
            self.count(source, pointer)
            self.open.add(id(source))
            try:
                merged.update(self.mapping(source, pointer))
            finally:
                self.open.discard(id(source))
        return merged

    def key(self, node: yaml.Node, pointer: str) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
            return str(node.value)
        if isinstance(node, yaml.ScalarNode):
            read_as = _SCALARS.get(node.tag)
            shown = json.dumps(read_as(node)) if read_as else node.tag
            message = f"key {node.value!r} is not a string (YAML reads it as {shown}); quote it"
        else:
            kind = "a mapping" if isinstance(node, yaml.MappingNode) else "a list"
            message = f"a key must be a string, not {kind}"
        self.error(node, pointer, "yaml.non-string-key", message)
        return None


def _syntax_error(file: str, exc: yaml.MarkedYAMLError) -> Diagnostic:
    """PyYAML's problem, and where the construct it was reading began (an open quote...)."""
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = exc.problem or exc.context or "invalid YAML"
    context = exc.context_mark
    if exc.context and context is not None and context is not mark:
        message += f" ({exc.context} at line {context.line + 1}, column {context.column + 1})"
    return Diagnostic(file, line, column, "yaml.syntax", message)


def declared(data: Any) -> Named | None:
    """The kind and name a document declares, when they can be read: ("settings", "") for a
    settings document, else both must be strings."""
    if not isinstance(data, dict):
        return None
    kind, name = data.get("kind"), data.get("name")
    if kind == DocumentKind.SETTINGS:
        return (DocumentKind.SETTINGS, "")
    return (kind, name) if isinstance(kind, str) and isinstance(name, str) else None


def load_text(text: str, file: str) -> tuple[list[Document], list[Diagnostic], list[Named]]:
    """Every document in `text`, every problem found in it, and what the documents dropped
    for their problems declare (`declared`), when it can be read."""
    documents: list[Document] = []
    diagnostics: list[Diagnostic] = []
    dropped: list[Named] = []
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        return [], [_syntax_error(file, exc)], []
    except yaml.YAMLError as exc:
        return [], [Diagnostic(file, 1, 1, "yaml.syntax", str(exc))], []
    for index, node in enumerate(nodes):
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL
                            and not node.value):
            continue  # an empty document: `---` at the end of a file, or only comments
        builder = _Builder(file)
        try:
            data = builder.build(node, "")
        except _AliasLimit as exc:
            line, column = builder.locate_key(exc.pointer)
            diagnostics.append(Diagnostic(file, line, column, "yaml.alias-limit", exc.message,
                                          exc.pointer))
            continue
        if not isinstance(data, dict):
            builder.error(node, "", "yaml.not-a-mapping",
                          "a document must be a mapping with a 'kind' key")
        diagnostics.extend(builder.diagnostics)
        if not builder.diagnostics:
            documents.append(Document(file, index, data, builder.positions, builder.key_positions))
        elif (named := declared(data)) is not None:
            # A document with YAML problems goes no further: its data is not what was meant.
            # But it exists, as a document that failed the schema does.
            dropped.append(named)
    return documents, diagnostics, dropped


def load_file(path: Path, display: str | None = None
              ) -> tuple[list[Document], list[Diagnostic], list[Named]]:
    """Read and parse one file (`load_text`); an unreadable file is a diagnostic, not an
    exception."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Diagnostic(name, 1, 1, "file.unreadable", f"cannot read the file: {exc}")], []
    return load_text(text, name)
