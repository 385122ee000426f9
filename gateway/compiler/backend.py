"""Recurring events and database triggers: declared like workflows (a name each), built
once every workflow and data type is known, with what only the whole config can tell: the
cron expression parses, the time zone exists, the workflow run and its parameters exist,
the trigger's type and the fields its templates read of `before` and `after` exist."""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from croniter import croniter
from jinja2 import TemplateSyntaxError

from gateway.compiler.data_types import duplicate
from gateway.compiler.steps import build_workflow, retry_of
from gateway.compiler.units import Unit
from gateway.config.source import Document, DocumentKind
from gateway.core import pointer as ptr
from gateway.core.errors import did_you_mean
from gateway.core.settings import parse_duration
from gateway.runtime.model import RecurringEvent, Trigger
from gateway.templates import templating

if TYPE_CHECKING:
    from gateway.compiler import Compiler

EVENTS = frozenset({"create", "change", "delete"})


def declare(c: Compiler, kind: str, docs: list[Document]) -> None:
    seen: dict[str, Document] = {}
    for doc in docs:
        name = doc.data["name"]
        if name in seen:
            duplicate(c, doc, seen[name], kind.replace("_", " "), name)
            continue
        seen[name] = doc
        c.units[(kind, name)] = Unit(kind, doc, ())


def _units(c: Compiler, kind: str) -> Iterator[tuple[str, Unit]]:
    return ((name, unit) for (k, name), unit in c.units.items() if k == kind)


def build_recurring(c: Compiler, kind: str, names: frozenset[str]) -> Mapping[str, Any]:
    return {name: _recurring(c, names, name, unit) for name, unit in _units(c, kind)}


def _recurring(c: Compiler, names: frozenset[str], name: str, unit: Unit) -> RecurringEvent:
    doc, data = unit.doc, unit.doc.data
    if not ({"cron", "every", "type"} & data.keys()) or not ({"workflow", "steps"} & data.keys()):
        c.error(doc, "", "recurring.incomplete",
                "a recurring event needs when (cron, every, or type for one per record) and "
                "what (workflow or steps)")
    _check_schedule(c, doc, data)
    if "type" in data and data["type"] not in c.data_types and not c.is_broken(
            DocumentKind.DATA_TYPE, data["type"]):
        c.error(doc, "/type", "ref.unknown-type", f"unknown data type '{data['type']}'"
                + did_you_mean(data["type"], c.data_types))
    if "workflow" in data:
        _check_workflow(c, doc, data["workflow"], data.get("params") or {})
    steps = build_workflow(c, names, name, unit) if "steps" in data else None
    if steps is not None:
        steps = replace(steps, kind=DocumentKind.RECURRING_EVENT,
                        ignore_privacy_rules=bool(data.get("ignore_privacy_rules")))
    every = data.get("every")
    return RecurringEvent(
        name=name, cron=data.get("cron"), every=parse_duration(every) if every else None,
        timezone=data.get("timezone", "UTC"), misfire=data.get("misfire", "skip"),
        type=data.get("type"), workflow=data.get("workflow"), params=data.get("params") or {},
        steps=steps, location=f"{doc.file}:{doc.locate('')[0]}",
        retry=retry_of(data["retry"]) if "retry" in data else None)


def _check_schedule(c: Compiler, doc: Document, data: Mapping[str, Any]) -> None:
    cron = data.get("cron")
    if cron is not None and (len(cron.split()) != 5 or not croniter.is_valid(cron)):
        c.error(doc, "/cron", "recurring.bad-cron",
                f"'{cron}' is not a cron expression (five fields: minute hour day month "
                "weekday, e.g. '0 3 * * *')")
    if data.get("every") is not None and parse_duration(data["every"]).total_seconds() < 1:
        c.error(doc, "/every", "recurring.bad-every", "every must be at least 1s")
    zone = data.get("timezone")
    if zone is not None:
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            c.error(doc, "/timezone", "recurring.bad-timezone",
                    f"'{zone}' is not an IANA time zone (e.g. Europe/Paris, UTC)")


def _check_workflow(c: Compiler, doc: Document, name: str, params: Mapping[str, Any]) -> None:
    workflow = c.units.get((DocumentKind.API_WORKFLOW, name))
    if workflow is None:
        if not c.is_broken(DocumentKind.API_WORKFLOW, name):
            known = [n for k, n in c.units if k == DocumentKind.API_WORKFLOW]
            c.error(doc, "/workflow", "ref.unknown-workflow",
                    f"unknown API workflow '{name}'" + did_you_mean(name, known))
        return
    declared = {p.name: p for p in workflow.params}
    for key in params:
        if key not in declared:
            c.error(doc, ptr.join("/params", key), "ref.unknown-workflow-param",
                    f"workflow '{name}' has no parameter '{key}'" + did_you_mean(key, declared),
                    key=True)
    for param in workflow.params:
        if param.name not in params and param.name != "thing" and not (
                param.optional or param.has_default):
            c.error(doc, "/params" if "params" in doc.data else "/workflow",
                    "ref.missing-workflow-param",
                    f"workflow '{name}' needs the parameter '{param.name}'")


def build_triggers(c: Compiler, kind: str, names: frozenset[str]) -> Mapping[str, Any]:
    return {name: _trigger(c, names, name, unit) for name, unit in _units(c, kind)}


def _trigger(c: Compiler, names: frozenset[str], name: str, unit: Unit) -> Trigger:
    doc, data = unit.doc, unit.doc.data
    type_name = data["type"]
    spec = c.data_types.get(type_name)
    if spec is None and not c.is_broken(DocumentKind.DATA_TYPE, type_name):
        c.error(doc, "/type", "ref.unknown-type",
                f"unknown data type '{type_name}'" + did_you_mean(type_name, c.data_types))
    if spec is not None:
        _check_fields(c, doc, "", data, frozenset(spec.fields))
    run = replace(build_workflow(c, names, name, unit), kind=DocumentKind.DATABASE_TRIGGER,
                  ignore_privacy_rules=True)
    return Trigger(name=name, type=type_name, events=frozenset(data.get("events", EVENTS)),
                   run=run, location=f"{doc.file}:{doc.locate('')[0]}")


_SYSTEM = frozenset({"_id", "_type", "created_at", "modified_at", "created_by"})


def _check_fields(c: Compiler, doc: Document, pointer: str, value: Any,
                  fields: frozenset[str]) -> None:
    """Every `before.<field>` and `after.<field>` a template of the trigger reads is a field
    of its type."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_fields(c, doc, ptr.join(pointer, str(key)), item, fields)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_fields(c, doc, ptr.join(pointer, str(index)), item, fields)
    elif isinstance(value, str) and templating.is_template(value):
        try:
            refs = templating.references(templating.parse(value))
        except TemplateSyntaxError:
            return  # reported where the template is compiled
        for root, key, _line in refs.attributes:
            if root in ("before", "after") and key not in fields | _SYSTEM:
                c.error(doc, pointer, "ref.unknown-field",
                        f"'{root}.{key}' is not a field of {doc.data['type']}"
                        + did_you_mean(key, fields))
