"""Workflows and custom events, declared before any is built: their names, parameters and
returns, and the custom events each calls (which must not call each other in a loop)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.actions import ACTIONS
from gateway.compiler.data_types import check_type, check_value, duplicate
from gateway.config.source import Document, DocumentKind
from gateway.core import pointer as ptr
from gateway.runtime.model import ROUTE_PREFIX
from gateway.runtime.param import Param
from gateway.templates import templating

if TYPE_CHECKING:
    from gateway.compiler import Compiler


@dataclass(slots=True)
class Unit:
    """A workflow or event whose steps are compiled once every name is known."""

    kind: str
    doc: Document
    params: tuple[Param, ...]
    returns: tuple[Param, ...] = ()
    calls: list[tuple[str, str]] = field(default_factory=list)  # (event, pointer)
    reads_request: bool = False  # one of its templates reads `request`


def declare_units(c: Compiler, kind: str, docs: list[Document]) -> None:
    seen: dict[str, Document] = {}
    for doc in docs:
        name = doc.data["name"]
        if name in seen:
            _clash(c, kind, doc, seen[name], name)
        unit = Unit(kind, doc, _params(c, doc, "/params", doc.data.get("params", {})),
                    _params(c, doc, "/returns", doc.data.get("returns", {})))
        unit.calls.extend(_calls(doc))
        if name in seen:
            c.shadowed.append(unit)  # its name is taken: checked, never served
            continue
        seen[name] = doc
        c.units[(kind, name)] = unit


def _clash(c: Compiler, kind: str, doc: Document, first: Document, name: str) -> None:
    if kind == DocumentKind.API_WORKFLOW and doc.data.get("expose") and first.data.get("expose"):
        line = first.locate("/name")[0]
        c.error(doc, "/name", "route.conflict",
                f"the route {ROUTE_PREFIX}/{name} is already served by the workflow "
                f"at {first.file}:{line}")
    else:
        duplicate(c, doc, first, kind.replace("_", " "), name)


def _params(c: Compiler, doc: Document, base: str, specs: Mapping[str, Any]) -> tuple[Param, ...]:
    params = []
    for key, spec in specs.items():
        pointer = ptr.join(base, key)
        check_type(c, doc, pointer + "/type", spec["type"])
        if "default" in spec:
            _check_default(c, doc, pointer + "/default", spec)
        params.append(Param(key, spec["type"], spec.get("list", False),
                            spec.get("optional", False), spec.get("default"),
                            "default" in spec, spec.get("in") == "query",
                            c.option_sets.get(spec["type"]), spec.get("private", False),
                            spec.get("trace", False)))
    return tuple(params)


def _check_default(c: Compiler, doc: Document, pointer: str, spec: Mapping[str, Any]) -> None:
    default = spec["default"]
    if templating.contains_template(default):
        c.error(doc, pointer, "param.template-default",
                "a default is a plain value, not a template")
        return
    check_value(c, doc, pointer, default, spec["type"], spec.get("list", False))


def _calls(doc: Document) -> list[tuple[str, str]]:
    """The custom events the steps call inline, with where each call is written."""
    found = []
    for index, step in enumerate(doc.data.get("steps", [])):
        if f"/steps/{index}" in doc.broken:
            continue
        action = ACTIONS.get(step.get("action", ""))
        if action is not None and action.event_arg and action.event_arg in step:
            found.append((step[action.event_arg], f"/steps/{index}/{action.event_arg}"))
    return found


def check_cycles(c: Compiler) -> None:
    """Report each custom-event cycle once, at every call that closes it."""
    events = {name: unit for (kind, name), unit in c.units.items()
              if kind == DocumentKind.CUSTOM_EVENT}
    graph = {name: [event for event, _ in unit.calls] for name, unit in events.items()}
    for name, unit in events.items():
        for event, pointer in unit.calls:
            path = _path_between(graph, event, name)
            if path is not None:
                loop = " -> ".join([name, *path])
                c.error(unit.doc, pointer, "event.cycle",
                        f"custom events call each other in a loop: {loop}")


def _path_between(graph: Mapping[str, list[str]], start: str, goal: str) -> list[str] | None:
    """The calls from `start` that lead back to `goal`, or None (depth-first)."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        if node == goal:
            return path
        if node in seen:
            continue
        seen.add(node)
        stack.extend((nxt, [*path, nxt]) for nxt in graph.get(node, []))
    return None
