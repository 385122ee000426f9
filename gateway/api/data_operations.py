"""Bubble's Data API over the built-in records: reading one record, searching, creating,
changing, replacing and deleting, each as Bubble's callers expect it.

Every operation runs as a recorded run (`Interpreter.perform`), through the same record
actions and privacy viewer as a workflow's steps: the Data API is another way in to the
same records, not a second implementation. Admin keys may do everything; users and
anonymous callers find and see what the privacy rules grant, and write only what a rule's
`create_via_api`, `modify_via_api` or `delete_via_api` grants (a change is judged on the
record before and after it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.actions import records as actions
from gateway.core.encoding import iso
from gateway.core.errors import DataApiError, GatewayError, RefusedError
from gateway.runtime.context import Reply, RunContext
from gateway.runtime.file_values import admitted_fields, signed_record
from gateway.runtime.param import FILE_TYPES
from gateway.runtime.privacy import EVERYTHING, Grant
from gateway.storage.common.codec import MAX_OFFSET, encode_cursor
from gateway.storage.contract import Option, TypeSpec

MAX_LIMIT = 100  # Bubble's page size, and its largest
MAX_BULK = 1000  # lines of one bulk creation
MAX_CONSTRAINTS = 100  # constraints of one Data API search
MAX_SORT_FIELDS = 10  # sort fields of one Data API search
# Bubble's names of the system fields, as written and as clients fold them.
SYSTEM_FIELDS = {
    "_id": "_id", "Created Date": "created_at", "createddate": "created_at",
    "Modified Date": "modified_at", "modifieddate": "modified_at",
    "Created By": "created_by", "createdby": "created_by",
}
_SHOWN_AS = {"created_at": "Created Date", "modified_at": "Modified Date",
             "created_by": "Created By"}
# Bubble's constraint types (with spaces) and the store's.
CONSTRAINT_TYPES = {
    "equals": "equals", "not equal": "not_equal", "is_empty": "is_empty",
    "is_not_empty": "is_not_empty", "empty": "is_empty", "not empty": "is_not_empty",
    "text contains": "text_contains", "not text contains": "not_text_contains",
    "greater than": "greater_than", "less than": "less_than", "in": "in", "not in": "not_in",
    "contains": "contains", "not contains": "not_contains",
    "geographic_search": "geographic_search", "geographic search": "geographic_search",
}
NOT_ALLOWED = {
    "create": "You are not allowed to create this {type} (privacy rules: create_via_api)",
    "modify": "You are not allowed to modify this {type} (privacy rules: modify_via_api)",
    "delete": "You are not allowed to delete this {type} (privacy rules: delete_via_api)",
}


@dataclass(frozen=True, slots=True)
class Query:
    """A search as the Data API asks it, checked: store constraints and sort keys."""

    constraints: list[dict[str, Any]] = field(default_factory=list)
    sort: list[dict[str, Any]] = field(default_factory=list)
    limit: int = MAX_LIMIT
    cursor: int = 0
    exclude_remaining: bool = False


def unrecognized(name: Any) -> DataApiError:
    return DataApiError(f"Unrecognized field: {printable(name)}")


def printable(name: Any) -> str:
    text = str(name)
    return text if text.isprintable() and len(text) <= 100 else "(an unprintable name)"


def missing(type: str, id: str) -> DataApiError:
    return DataApiError(f"Missing object of type {type}: object with id {printable(id)} "
                        "does not exist", 404, "MISSING_DATA")


def search_key(spec: TypeSpec, name: Any, display: bool = False) -> str:
    """A field of `spec` (or a system field, by Bubble's name) as the store names it; with
    `display`, a field is keyed by its display where it has one."""
    if isinstance(name, str):
        if name in SYSTEM_FIELDS:
            return SYSTEM_FIELDS[name]
        field = spec.field_keyed(name) if display else name if name in spec.fields else None
        if field is not None:
            return field
    raise unrecognized(name)


def constraint(spec: TypeSpec, raw: Any, display: bool = False) -> dict[str, Any]:
    """One of Bubble's `{key, constraint_type, value}` as a search step's constraint. An
    unknown constraint type is 404 `NOT_FOUND`, as Bubble answers it."""
    if not isinstance(raw, dict):
        raise DataApiError("Each constraint must be an object with key, constraint_type and "
                           "value", 400, "INVALID_DATA")
    kind = raw.get("constraint_type")
    if not isinstance(kind, str) or kind not in CONSTRAINT_TYPES:
        raise DataApiError(f"Constraint type {printable(kind)} not found", 404, "NOT_FOUND")
    return {"key": search_key(spec, raw.get("key"), display),
            "constraint": CONSTRAINT_TYPES[kind],
            "value": raw.get("value")}


def query(spec: TypeSpec, constraints: Any, sort: Sequence[tuple[Any, bool]], limit: int,
          cursor: int, exclude_remaining: bool, display: bool = False) -> Query:
    if not isinstance(constraints, list):
        raise DataApiError("constraints must be a JSON array", 400, "INVALID_DATA")
    if len(constraints) > MAX_CONSTRAINTS:
        raise DataApiError(f"At most {MAX_CONSTRAINTS} constraints", 400, "INVALID_DATA")
    if len(sort) > MAX_SORT_FIELDS:
        raise DataApiError(f"At most {MAX_SORT_FIELDS} sort fields", 400, "INVALID_DATA")
    if not 1 <= limit <= MAX_LIMIT:
        raise DataApiError(f"limit must be between 1 and {MAX_LIMIT}", 400, "INVALID_DATA")
    if not 0 <= cursor <= MAX_OFFSET:
        raise DataApiError("cursor must be a whole number from 0", 400, "INVALID_DATA")
    return Query([constraint(spec, c, display) for c in constraints],
                 [{"key": search_key(spec, key, display), "descending": down}
                  for key, down in sort],
                 limit, cursor, exclude_remaining)


def as_bubble(record: Mapping[str, Any], spec: TypeSpec | None = None) -> dict[str, Any]:
    """A record as the Data API shows it: `_id`, Bubble's names of the system dates and
    creator (those the privacy rules show), and the fields that hold a value (Bubble leaves
    empty ones out), keyed by their displays when `spec` is given."""
    shown: dict[str, Any] = {}
    for key, value in (spec.keyed(record) if spec else record).items():
        if key == "_type" or value is None or value == []:
            continue
        shown[_SHOWN_AS.get(key, key)] = _shown(value)
    return shown


def linked(ctx: RunContext, spec: TypeSpec, record: dict[str, Any]) -> dict[str, Any]:
    """`record` with a signed, expiring link in place of each private file's path (Bubble
    shows a file as its URL)."""
    files = ctx.services.files
    names = [n for n, f in spec.fields.items() if f.type in FILE_TYPES]
    return record if files is None or not names else signed_record(files, names, record)


def _displayed(ctx: RunContext, spec: TypeSpec) -> TypeSpec | None:
    """`spec` when the Data API keys fields by their displays, None when by their names."""
    return spec if ctx.settings.data_api_display_keys else None


def _shown(value: Any) -> Any:
    """A value as Bubble shows it: a date in ISO form, an option by its display."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Option):
        return value.display
    if isinstance(value, list) and value and isinstance(value[0], Option):
        return [item.display if isinstance(item, Option) else item for item in value]
    return value


def _step(ctx: RunContext, action: str) -> None:
    # The run log's entry for the operation (remarks such as `hidden_by_privacy` land in it).
    ctx.steps.append({"id": None, "action": action, "status": "success"})


def grant(ctx: RunContext, type: str, record: Mapping[str, Any]) -> Grant:
    """What the caller may do with `record`. A type with no privacy rules is found and seen
    by everyone, and written through the Data API by admin keys only."""
    if ctx.identity.kind == "admin":
        return EVERYTHING
    privacy = ctx.viewer.of(type)
    if privacy is None:
        return Grant(True, None)
    return privacy.grant(record, ctx.viewer.user)


def _refuse(action: str, type: str) -> RefusedError:
    return RefusedError(NOT_ALLOWED[action].format(type=type))


def checked_fields(spec: TypeSpec, body: Any, display: bool = False) -> dict[str, Any]:
    """The body's fields (keyed by their displays with `display`) in their declared types,
    by name: an unknown one is 400 `ERROR`."""
    if not isinstance(body, dict):
        raise DataApiError("The body must be a JSON object of field values", 400,
                           "INVALID_DATA")
    named = {}
    for key, value in body.items():
        name = spec.field_keyed(key) if display else key if key in spec.fields else None
        if name is None:
            raise unrecognized(key)
        named[name] = value
    return actions.check_fields(spec, named)


async def get_one(ctx: RunContext, spec: TypeSpec, id: str) -> Reply:
    _step(ctx, "get_thing")
    found = await actions.get_thing(ctx, {"type": spec.name, "thing": id})
    if found is None:
        raise missing(spec.name, id)
    return Reply(data={"response": as_bubble(linked(ctx, spec, found), _displayed(ctx, spec))})


async def search(ctx: RunContext, spec: TypeSpec, q: Query) -> Reply:
    _step(ctx, "search")
    page = await actions.search(ctx, {
        "type": spec.name, "constraints": q.constraints, "sort": q.sort, "limit": q.limit,
        "cursor": encode_cursor(q.cursor) if q.cursor else None})
    results = [as_bubble(linked(ctx, spec, r), _displayed(ctx, spec)) for r in page["results"]]
    response: dict[str, Any] = {"cursor": q.cursor, "results": results, "count": len(results)}
    if not q.exclude_remaining:
        response["remaining"] = max(page["count"] - q.cursor - len(results), 0)
    return Reply(data={"response": response})


async def create(ctx: RunContext, spec: TypeSpec, body: Any) -> Reply:
    _step(ctx, "create_thing")
    return Reply(data={"status": "success", "id": await _create(ctx, spec, body)}, status=201)


async def _create(ctx: RunContext, spec: TypeSpec, body: Any) -> str:
    password = None
    if (spec.name == actions.USER and isinstance(body, dict) and "password" in body
            and "password" not in spec.fields):  # Bubble's optional password of a new user
        body = dict(body)
        password = body.pop("password")
    fields = await admitted_fields(ctx, spec, checked_fields(
        spec, body, ctx.settings.data_api_display_keys))
    if ctx.identity.kind != "admin":
        defaults = {k: f.default for k, f in spec.fields.items() if f.default is not None}
        prospective = {"_id": None, "_type": spec.name, "created_at": ctx.now,
                       "modified_at": ctx.now, "created_by": ctx.identity.user_id,
                       **defaults, **fields}
        if not grant(ctx, spec.name, prospective).create:
            raise _refuse("create", spec.name)
    record = await actions.create_thing(ctx, {"type": spec.name, "fields": fields,
                                              "password": password})
    return str(record["_id"])


async def bulk(ctx: RunContext, spec: TypeSpec, items: list[Any]) -> Reply:
    """One result line per item, in order: each item created or refused on its own."""
    _step(ctx, "create_thing (bulk)")
    lines = []
    created = 0
    for item in items:
        try:
            lines.append({"status": "success", "id": await _create(ctx, spec, item)})
            created += 1
        except GatewayError as exc:
            if exc.status >= 500:
                raise
            lines.append({"status": "error", "message": exc.message})
    ctx.remark(created=created, refused=len(items) - created)
    return Reply(data=lines)


async def change(ctx: RunContext, spec: TypeSpec, id: str, body: Any, *,
                 replace: bool) -> Reply:
    """PATCH (the fields given) or PUT (every field: those not given are cleared)."""
    _step(ctx, "make_changes")
    fields = await admitted_fields(ctx, spec, checked_fields(
        spec, body, ctx.settings.data_api_display_keys))
    if replace:
        fields = {key: actions.check_value(spec, key, None) for key in spec.fields} | fields
    before = await _findable(ctx, spec, id)
    if ctx.identity.kind != "admin":
        now = grant(ctx, spec.name, before)
        if not now.modify or not now.sees(frozenset(fields)):
            raise _refuse("modify", spec.name)
        if not grant(ctx, spec.name, {**before, **fields}).modify:
            raise _refuse("modify", spec.name)  # the change would take it out of reach
    await actions.make_changes(ctx, {"type": spec.name, "thing": id, "fields": fields})
    return Reply(status=204)


async def delete(ctx: RunContext, spec: TypeSpec, id: str) -> Reply:
    _step(ctx, "delete_thing")
    record = await _findable(ctx, spec, id)
    if ctx.identity.kind != "admin" and not grant(ctx, spec.name, record).delete:
        raise _refuse("delete", spec.name)
    await actions.delete_thing(ctx, {"type": spec.name, "thing": id})
    return Reply(status=204)


async def _findable(ctx: RunContext, spec: TypeSpec, id: str) -> dict[str, Any]:
    """The record, as it is stored; 404 when there is none or the caller may not find it
    (the same answer, so that ids do not leak)."""
    assert ctx.storage is not None
    record = await ctx.storage.records.get(spec.name, id)
    if record is None or not grant(ctx, spec.name, record).find:
        raise missing(spec.name, id)
    return record
