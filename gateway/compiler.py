"""From schema-valid documents to the compiled model, with the semantic checks.

The schema says what each document may look like; the compiler checks what only the whole
config can tell: names that must exist (parameters, earlier steps, custom events, data types
and their fields, secrets), templates that must parse, custom events that must not call each
other in a loop, and return values that must match what an event declares. Every problem is
a located `Diagnostic`; compilation goes on after one, so that all are reported at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any

from jinja2 import TemplateSyntaxError

from gateway import pointer as ptr
from gateway import templating
from gateway.actions import ACTIONS
from gateway.coercion import compile_coercer, converter
from gateway.errors import Diagnostic
from gateway.model import SCALAR_TYPES, Param, Registry, Step, Workflow
from gateway.settings import Settings, from_document
from gateway.source import Document
from gateway.storage.interface import SYSTEM_KEYS, FieldSpec, TypeSpec
from gateway.templating import Compiled

STEP_KEYS = frozenset({"id", "action", "only_when", "on_error", "description"})
BUILTIN_TYPES = {"user": TypeSpec("user", {"email": FieldSpec("email", "text", unique=True)})}
_NAMES = {
    "api_workflow": frozenset({"params", "steps", "now", "current_user", "request", "secrets",
                               "run"}),
    "custom_event": frozenset({"params", "steps", "now", "current_user", "secrets", "run"}),
}


@dataclass(slots=True)
class _Scope:
    """What templates at one place may refer to."""

    doc: Document
    kind: str
    params: Mapping[str, Param]
    step_ids: frozenset[str]
    later_ids: frozenset[str] = frozenset()
    own_id: str | None = None


@dataclass(slots=True)
class _Pending:
    """A workflow or event whose steps are compiled once every name is known."""

    doc: Document
    params: tuple[Param, ...]
    returns: tuple[Param, ...] = ()
    calls: list[tuple[str, str]] = field(default_factory=list)  # (event, pointer)


class Compiler:
    """Compiles one config. `codegen=False` checks everything but skips generating code
    for templates (what `gateway validate` needs, several times faster)."""

    def __init__(self, documents: Iterable[Document], *, codegen: bool = True,
                 broken: Iterable[tuple[str, str]] = ()) -> None:
        self.documents = list(documents)
        self.codegen = codegen
        # (kind, name) of documents that failed the schema: they exist, so a reference to
        # one is not reported again as unknown.
        self.broken = frozenset(broken)
        self.diagnostics: list[Diagnostic] = []
        self.settings = Settings()
        self.data_types: dict[str, TypeSpec] = dict(BUILTIN_TYPES)
        self.pending: dict[tuple[str, str], _Pending] = {}
        self.reads_request: set[int] = set()  # id() of documents whose templates do

    def error(self, doc: Document, pointer: str, code: str, message: str, *,
              key: bool = False) -> None:
        self.diagnostics.append(doc.diagnostic(pointer, code, message, key=key))

    # --- the passes --------------------------------------------------------------------------

    def compile(self) -> Registry:
        by_kind: dict[str, list[Document]] = {}
        for doc in self.documents:
            by_kind.setdefault(doc.data.get("kind", ""), []).append(doc)
        self._settings(by_kind.get("settings", []))
        self._data_types(by_kind.get("data_type", []))
        for kind in ("custom_event", "api_workflow"):
            self._declare(kind, by_kind.get(kind, []))
        self._check_cycles()
        events = self._build("custom_event")
        workflows = self._build("api_workflow")
        files = tuple(sorted({doc.file for doc in self.documents}))
        return Registry(workflows, events, self.data_types, self.settings, files)

    def _settings(self, docs: list[Document]) -> None:
        for doc in docs[1:]:
            self.error(doc, "/kind", "settings.duplicate",
                       f"only one settings document is allowed (another is in {docs[0].file})")
        if docs:
            self.settings = from_document(docs[0].data)

    def _data_types(self, docs: list[Document]) -> None:
        seen: dict[str, Document] = {}
        for doc in docs:
            name = doc.data["name"]
            if name in seen:
                self._duplicate(doc, seen[name], "data type", name)
                continue
            seen[name] = doc
            fields = {key: FieldSpec(key, spec["type"], spec.get("list", False),
                                     spec.get("unique", False), spec.get("indexed", False),
                                     _typed(spec.get("default"), spec["type"],
                                            spec.get("list", False)))
                      for key, spec in doc.data.get("fields", {}).items()}
            base = BUILTIN_TYPES.get(name)
            merged = {**(base.fields if base else {}), **fields}
            self.data_types[name] = TypeSpec(name, merged)
        for doc in seen.values():
            for key, spec in doc.data.get("fields", {}).items():
                self._check_type(doc, ptr.join("/fields", key, "type"), spec["type"])
                if "default" in spec:
                    self._check_value(doc, ptr.join("/fields", key, "default"), spec["default"],
                                      spec["type"], spec.get("list", False))

    def _duplicate(self, doc: Document, first: Document, what: str, name: str) -> None:
        line = first.locate("/name")[0]
        self.error(doc, "/name", "name.duplicate",
                   f"{what} '{name}' is already defined at {first.file}:{line}")

    def _check_type(self, doc: Document, pointer: str, type_name: str) -> None:
        if ("data_type", type_name) in self.broken:
            return
        if type_name not in SCALAR_TYPES and type_name not in self.data_types:
            self.error(doc, pointer, "ref.unknown-type", f"unknown data type '{type_name}'"
                       + _suggest(type_name, self.data_types))

    def _check_value(self, doc: Document, pointer: str, value: Any, type_name: str,
                     is_list: bool) -> None:
        if isinstance(value, str) and templating.is_template(value):
            return
        convert = converter(type_name)
        try:
            if is_list:
                [convert(item) for item in (value if isinstance(value, list) else [None])]
            else:
                convert(value)
        except (ValueError, TypeError, OverflowError):
            shown = f"list of {type_name}" if is_list else type_name
            self.error(doc, pointer, "value.type-mismatch",
                       f"{json.dumps(value)} is not a valid {shown}")

    def _declare(self, kind: str, docs: list[Document]) -> None:
        seen: dict[str, Document] = {}
        for doc in docs:
            name = doc.data["name"]
            if name in seen:
                both_exposed = doc.data.get("expose") and seen[name].data.get("expose")
                if kind == "api_workflow" and both_exposed:
                    line = seen[name].locate("/name")[0]
                    self.error(doc, "/name", "route.conflict",
                               f"the route /api/1.1/wf/{name} is already served by the workflow "
                               f"at {seen[name].file}:{line}")
                else:
                    self._duplicate(doc, seen[name], kind.replace("_", " "), name)
                continue
            seen[name] = doc
            params = self._params(doc, "/params", doc.data.get("params", {}))
            returns = self._params(doc, "/returns", doc.data.get("returns", {}))
            self.pending[(kind, name)] = _Pending(doc, params, returns)
            self._collect_calls(kind, self.pending[(kind, name)])

    def _params(self, doc: Document, base: str, specs: Mapping[str, Any]) -> tuple[Param, ...]:
        params = []
        for key, spec in specs.items():
            pointer = ptr.join(base, key)
            self._check_type(doc, pointer + "/type", spec["type"])
            if "default" in spec:
                self._check_default(doc, pointer + "/default", spec)
            params.append(Param(key, spec["type"], spec.get("list", False),
                                spec.get("optional", False), spec.get("default"),
                                "default" in spec, spec.get("in") == "query"))
        return tuple(params)

    def _check_default(self, doc: Document, pointer: str, spec: Mapping[str, Any]) -> None:
        default = spec["default"]
        if templating.contains_template(default):
            self.error(doc, pointer, "param.template-default",
                       "a default is a plain value, not a template")
            return
        self._check_value(doc, pointer, default, spec["type"], spec.get("list", False))

    def _collect_calls(self, kind: str, unit: _Pending) -> None:
        for index, step in enumerate(unit.doc.data.get("steps", [])):
            if step.get("action") == "trigger_event":
                unit.calls.append((step["event"], f"/steps/{index}/event"))

    def _check_cycles(self) -> None:
        """Report each custom-event cycle once, at every call that closes it."""
        graph = {name: [e for e, _ in unit.calls] for (kind, name), unit in self.pending.items()
                 if kind == "custom_event"}
        for (kind, name), unit in self.pending.items():
            if kind != "custom_event":
                continue
            for event, pointer in unit.calls:
                path = _path_between(graph, event, name)
                if path is not None:
                    loop = " -> ".join([name, *path])
                    self.error(unit.doc, pointer, "event.cycle",
                               f"custom events call each other in a loop: {loop}")

    # --- workflows and steps -----------------------------------------------------------------

    def _build(self, kind: str) -> dict[str, Workflow]:
        built = {}
        for (unit_kind, name), unit in self.pending.items():
            if unit_kind == kind:
                built[name] = self._workflow(kind, name, unit)
        return built

    def _workflow(self, kind: str, name: str, unit: _Pending) -> Workflow:
        doc, data = unit.doc, unit.doc.data
        returns_something = any(s.get("action") == "return_data" for s in data.get("steps", []))
        if unit.returns and not returns_something and any(not p.optional for p in unit.returns):
            self.error(doc, "/returns", "event.bad-return",
                       "this custom event declares returns but has no return_data step")
        params = {p.name: p for p in unit.params}
        top = _Scope(doc, kind, params, frozenset())
        only_when = self._condition(top, "/only_when", data.get("only_when"))
        steps = self._steps(kind, unit, params)
        line = doc.locate("")[0]
        return Workflow(
            kind=kind, name=name, params=unit.params, steps=steps, label=data.get("label", ""),
            expose=data.get("expose", False), auth=data.get("auth", "admin"),
            method=data.get("method", "POST"),
            ignore_privacy_rules=data.get("ignore_privacy_rules", False), only_when=only_when,
            return_200_if_condition_fails=data.get("return_200_if_condition_fails", False),
            returns=unit.returns, location=f"{doc.file}:{line}",
            uses_request=id(doc) in self.reads_request,
            may_wait=any(step.action not in _NEVER_WAIT for step in steps),
            record_params=tuple(p for p in unit.params if p.is_record),
            coerce=compile_coercer(name, unit.params))

    def _steps(self, kind: str, unit: _Pending, params: Mapping[str, Param]) -> tuple[Step, ...]:
        doc = unit.doc
        raw_steps = doc.data.get("steps", [])
        all_ids = {s["id"] for s in raw_steps if "id" in s}
        seen: set[str] = set()
        steps = []
        for index, data in enumerate(raw_steps):
            base = f"/steps/{index}"
            scope = _Scope(doc, kind, params, frozenset(seen), frozenset(all_ids - seen),
                           data.get("id"))
            steps.append(self._step(scope, unit, index, data))
            step_id = data.get("id")
            if step_id in seen:
                self.error(doc, base + "/id", "step.duplicate-id",
                           f"another step already has the id '{step_id}'")
            if step_id:
                seen.add(step_id)
        return tuple(steps)

    def _step(self, scope: _Scope, unit: _Pending, index: int, data: Mapping[str, Any]) -> Step:
        base = f"/steps/{index}"
        action = data["action"]
        args = {key: value for key, value in data.items() if key not in STEP_KEYS}
        compiled = templating.compile_tree(args, lambda text, p: self._leaf(scope, base + p, text))
        self._check_action(scope, unit, base, action, args)
        line = scope.doc.locate(base)[0]
        return Step(index=index, action=action, execute=ACTIONS[action], args=compiled,
                    id=data.get("id"),
                    only_when=self._condition(scope, base + "/only_when", data.get("only_when")),
                    continue_on_error=data.get("on_error") == "continue",
                    location=f"{scope.doc.file}:{line}")

    def _condition(self, scope: _Scope, pointer: str, value: Any) -> Compiled | None:
        if value is None:
            return None
        if isinstance(value, str):
            return self._leaf(scope, pointer, value)
        return templating.constant(bool(value))

    def _leaf(self, scope: _Scope, pointer: str, text: str) -> Compiled:
        if not templating.is_template(text):
            return templating.constant(text)
        try:
            source = templating.parse(text)
        except TemplateSyntaxError as exc:
            self.error(scope.doc, pointer, "template.syntax",
                       f"template syntax error on line {exc.lineno} of the template: {exc.message}")
            return templating.constant(None)
        self._check_references(scope, pointer, source)
        if not self.codegen:
            return templating.constant(None)
        return templating.compile_source(source)

    def _check_references(self, scope: _Scope, pointer: str, source: templating.Source) -> None:
        refs = templating.references(source)
        if "request" in refs.names:
            self.reads_request.add(id(scope.doc))
        allowed = _NAMES[scope.kind] | templating.GLOBAL_NAMES
        for name in sorted(refs.names - allowed):
            self.error(scope.doc, pointer, "template.undefined-name",
                       f"'{name}' is not defined here" + _suggest(name, allowed))
        for root, key, _line in refs.attributes:
            if root == "params" and key not in scope.params:
                self.error(scope.doc, pointer, "ref.unknown-param",
                           f"'params.{key}' is not a declared parameter"
                           + _suggest(key, scope.params))
            elif root == "steps" and key not in scope.step_ids:
                where = ("this step itself" if key == scope.own_id else
                         "a later step" if key in scope.later_ids else "no earlier step")
                self.error(scope.doc, pointer, "ref.unknown-step",
                           f"'steps.{key}' refers to {where}; a step can only use the results "
                           "of steps before it")
            elif root == "secrets" and key not in self.settings.secret_names:
                self.error(scope.doc, pointer, "ref.unknown-secret",
                           f"'secrets.{key}' is not declared in the settings' secrets")

    def _check_action(self, scope: _Scope, unit: _Pending, base: str, action: str,
                      args: Mapping[str, Any]) -> None:
        check = _ACTION_CHECKS.get(action)
        if check is not None:
            check(self, scope, unit, base, args)

    def _check_trigger(self, scope: _Scope, unit: _Pending, base: str,
                       args: Mapping[str, Any]) -> None:
        name = args["event"]
        event = self.pending.get(("custom_event", name))
        if event is None and ("custom_event", name) in self.broken:
            return
        if event is None:
            events = {n for k, n in self.pending if k == "custom_event"}
            self.error(scope.doc, base + "/event", "ref.unknown-event",
                       f"unknown custom event '{name}'" + _suggest(name, events))
            return
        given = args.get("params") or {}
        if not isinstance(given, dict):
            return
        declared = {p.name: p for p in event.params}
        for key, value in given.items():
            if key not in declared:
                self.error(scope.doc, ptr.join(base, "params", key), "ref.unknown-event-param",
                           f"custom event '{name}' has no parameter '{key}'"
                           + _suggest(key, declared), key=True)
            else:
                self._check_value(scope.doc, ptr.join(base, "params", key), value,
                                  declared[key].type, declared[key].list)
        for param in event.params:
            if param.name not in given and not (param.optional or param.has_default):
                self.error(scope.doc, base + "/params" if "params" in args else base,
                           "ref.missing-event-param",
                           f"custom event '{name}' needs the parameter '{param.name}'")

    def _check_return(self, scope: _Scope, unit: _Pending, base: str,
                      args: Mapping[str, Any]) -> None:
        if scope.kind != "custom_event":
            return
        if not unit.returns:
            if args.get("data") or "text" in args:
                self.error(scope.doc, base, "event.bad-return",
                           "this custom event returns values but declares no 'returns'")
            return
        data = args.get("data", {})
        if "text" in args:
            self.error(scope.doc, base + "/text", "event.bad-return",
                       "a custom event returns data, not text")
            return
        if not isinstance(data, dict):
            return
        declared = {p.name: p for p in unit.returns}
        for key in data:
            if key not in declared:
                self.error(scope.doc, ptr.join(base, "data", key), "event.bad-return",
                           f"'{key}' is not one of the declared returns"
                           + _suggest(key, declared), key=True)
            else:
                self._check_value(scope.doc, ptr.join(base, "data", key), data[key],
                                  declared[key].type, declared[key].list)
        for param in unit.returns:
            if param.name not in data and not param.optional:
                self.error(scope.doc, base + "/data" if "data" in args else base,
                           "event.bad-return", f"the declared return '{param.name}' is missing")


    def _check_record(self, scope: _Scope, unit: _Pending, base: str,
                      args: Mapping[str, Any]) -> None:
        name = args.get("type", "")
        spec = self.data_types.get(name)
        if spec is None and ("data_type", name) in self.broken:
            return
        if spec is None:
            self.error(scope.doc, base + "/type", "ref.unknown-type",
                       f"unknown data type '{name}'" + _suggest(name, self.data_types))
            return
        fields = args.get("fields") or {}
        for key, value in fields.items() if isinstance(fields, dict) else ():
            pointer = ptr.join(base, "fields", key)
            if self._known_field(scope, spec, pointer, key, system=False):
                field = spec.fields[key]
                self._check_value(scope.doc, pointer, value, field.type, field.list)
        for index, item in enumerate(args.get("constraints") or []):
            self._check_constraint(scope, spec, f"{base}/constraints/{index}", item)
        for index, item in enumerate(args.get("sort") or []):
            self._known_field(scope, spec, f"{base}/sort/{index}/key", item["key"], system=True)

    def _known_field(self, scope: _Scope, spec: TypeSpec, pointer: str, key: str, *,
                     system: bool) -> bool:
        if key in spec.fields or (system and key in SYSTEM_KEYS):
            return True
        self.error(scope.doc, pointer, "ref.unknown-field",
                   f"data type '{spec.name}' has no field '{key}'" + _suggest(key, spec.fields),
                   key=pointer.split("/")[-2] == "fields")
        return False

    def _check_constraint(self, scope: _Scope, spec: TypeSpec, pointer: str,
                          item: Mapping[str, Any]) -> None:
        key, kind = item["key"], item["constraint"]
        if not self._known_field(scope, spec, pointer + "/key", key, system=True):
            return
        field = spec.fields.get(key)
        if field is None:
            return
        if kind in ("contains", "not_contains") and not field.list:
            self.error(scope.doc, pointer + "/constraint", "constraint.mismatch",
                       f"'{kind}' applies to list fields; '{key}' is not a list")
        elif kind == "text_contains" and (field.type != "text" or field.list):
            shown = f"a list of {field.type}" if field.list else field.type
            self.error(scope.doc, pointer + "/constraint", "constraint.mismatch",
                       f"'text_contains' applies to text fields; '{key}' is {shown}")


# Actions that finish without waiting on anything: a run of only these needs no timer.
_NEVER_WAIT = frozenset({"set", "return_data", "terminate", "fail", "log"})
_RECORD_ACTIONS = ("create_thing", "make_changes", "make_changes_to_list", "delete_thing",
                   "delete_list", "get_thing", "search")
_ACTION_CHECKS: dict[str, Callable[..., None]] = {
    "trigger_event": Compiler._check_trigger,
    "return_data": Compiler._check_return,
    **{action: Compiler._check_record for action in _RECORD_ACTIONS},
}


def _typed(value: Any, type_name: str, is_list: bool) -> Any:
    """A default in its field's type (a date default is a datetime, as stored values are);
    one that does not convert is reported by `_check_value` and kept as written."""
    if value is None:
        return None
    convert = converter(type_name)
    try:
        return [convert(item) for item in value] if is_list else convert(value)
    except (ValueError, TypeError, OverflowError):
        return value


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


def _suggest(name: str, candidates: Iterable[str]) -> str:
    match = get_close_matches(name, list(candidates), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""
