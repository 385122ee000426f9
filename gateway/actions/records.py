"""Record actions: `create_thing`, `make_changes`, `make_changes_to_list`, `delete_thing`,
`delete_list`, `get_thing` and `search`.

Values are checked against the declared field types before they reach the store; a record
reference may be given as an id or as the record itself (the result of an earlier step).
`increment` adds to number fields in the write itself (no lost updates); reading a value
in a template and writing it back changed is last-writer-wins. A user's `email` is kept as
log-ins read it (trimmed, lower case, an address), and its log-in follows it; "" clears it
as null does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.actions import constraint
from gateway.actions.geocoding import located_constraints, located_fields
from gateway.actions.private_search import private_search
from gateway.core import pointer as ptr
from gateway.core.encoding import size_over
from gateway.core.errors import (
    DuplicateError,
    InvalidDataError,
    RunError,
    UsedEmailError,
    ValidationError,
    did_you_mean,
)
from gateway.runtime.accounts import fold_email
from gateway.runtime.action_spec import Action, StepCheck
from gateway.runtime.coercion import convert_value
from gateway.runtime.coercion import record_id as coerce_record_id
from gateway.runtime.context import MIN_SECRET_LENGTH, RunContext
from gateway.runtime.file_values import kept_fields
from gateway.storage.common import codec
from gateway.storage.contract import SYSTEM_KEYS, Change, Page, RecordStore, SortKey, TypeSpec

USER = "user"
MAX_PAGE = 10_000  # records a search step returns at most (`limit`; also its page without one)
_NUMERIC = frozenset({"number", "integer"})


def _storage(ctx: RunContext) -> RecordStore:
    if ctx.storage is None:
        raise RunError("no database is configured for this run")
    return ctx.storage.records


def _type(ctx: RunContext, name: str) -> TypeSpec:
    spec = ctx.data_types.get(name)
    if spec is None:
        raise RunError(f"unknown data type '{name}'")
    return spec


def record_id(value: Any) -> str:
    """An id from an id or a record."""
    try:
        return coerce_record_id(value)
    except ValueError as exc:
        raise RunError(f"expected a record or a record id, got {value!r}") from exc


def check_value(spec: TypeSpec, key: str, value: Any) -> Any:
    """`value` converted to field `key`'s declared type; None clears a field."""
    field = spec.fields.get(key)
    if field is None:
        raise ValidationError(f"data type '{spec.name}' has no field '{key}'")
    if value is None:
        return [] if field.list else None
    try:
        return convert_value(value, field.type, field.list, field.options)
    except ValueError as exc:
        shown = (field.options.describe(field.list) if field.options is not None
                 else f"list of {field.type}" if field.list else field.type)
        raise ValidationError(
            f"invalid value for field {key} of {spec.name} (must be {shown})") from exc


def check_fields(spec: TypeSpec, fields: Mapping[str, Any]) -> dict[str, Any]:
    checked = {key: check_value(spec, key, value) for key, value in fields.items()}
    if spec.name == USER and checked.get("email") == "":
        checked["email"] = None  # clears it, as null does (not for a user with a password)
    if spec.name == USER and checked.get("email") is not None:
        checked["email"] = fold_email(checked["email"])  # as log-ins look it up
    return checked


def check_increments(spec: TypeSpec, amounts: Any) -> dict[str, Any]:
    """`increment: {field: amount}`, each amount in its (number or integer) field's type."""
    if not isinstance(amounts, dict):
        raise ValidationError("`increment` must map field names to amounts")
    checked = {}
    for key, amount in amounts.items():
        field = spec.fields.get(key)
        if field is None or field.type not in _NUMERIC or field.list:
            raise ValidationError(f"field {key!r} of {spec.name} is not a number field, "
                                  "so it cannot be incremented")
        try:
            checked[key] = convert_value(amount, field.type)
        except ValueError as exc:
            raise ValidationError(f"invalid increment for field {key} of {spec.name} "
                                  f"(must be {field.type})") from exc
    return checked


async def create_thing(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    spec = _type(ctx, args["type"])
    fields = check_fields(spec, args.get("fields") or {})  # the store adds the defaults
    fields = await kept_fields(ctx, spec, await located_fields(ctx, spec, fields))
    if args.get("password") not in (None, ""):
        if spec.name != USER:
            raise InvalidDataError("create_thing takes a password for a user only")
        change = await _user_with_password(ctx, fields, args["password"])
    else:
        change = await _storage(ctx).create(spec.name, fields, created_by=ctx.identity.user_id,
                                            at=ctx.clock())
    ctx.changes.add(change)
    return ctx.viewer.cut(spec.name, change.record)


async def _user_with_password(ctx: RunContext, fields: dict[str, Any],
                              password: Any) -> Change:
    """A user record that can log in: its `email` field and `password` (never logged)."""
    if ctx.accounts is None:
        raise RunError("no database is configured for this run")
    if isinstance(password, str) and len(password) >= MIN_SECRET_LENGTH:
        ctx.passwords.add(password)
    others = {k: v for k, v in fields.items() if k != "email"}
    return await ctx.accounts.create_user(fields.get("email"), password, others,
                                          ctx.identity.user_id)


async def make_changes(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    spec = _type(ctx, args["type"])
    fields = await kept_fields(ctx, spec, await located_fields(
        ctx, spec, check_fields(spec, args.get("fields") or {})))
    increment = check_increments(spec, args.get("increment") or {})
    try:
        change = await _storage(ctx).update(spec.name, record_id(args["thing"]), fields,
                                            increment, at=ctx.clock())
    except DuplicateError as exc:
        raise _used_email(spec, exc) from exc
    ctx.changes.add(change)
    return ctx.viewer.cut(spec.name, change.record)


async def make_changes_to_list(ctx: RunContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _type(ctx, args["type"])
    fields = await kept_fields(ctx, spec, await located_fields(
        ctx, spec, check_fields(spec, args.get("fields") or {})))
    increment = check_increments(spec, args.get("increment") or {})
    ids = [record_id(thing) for thing in _things(args["things"])]
    try:
        changes = await _storage(ctx).update_many(spec.name, ids, fields, increment,
                                                  at=ctx.clock())
    except DuplicateError as exc:
        raise _used_email(spec, exc) from exc
    ctx.changes.add(*changes)
    return [ctx.viewer.cut(spec.name, change.record) for change in changes]


def _used_email(spec: TypeSpec, exc: DuplicateError) -> Exception:
    """A user's e-mail another user has is refused as sign-up refuses it."""
    if spec.name == USER and exc.field == "email":
        return UsedEmailError("This email is already in use")
    return exc


async def delete_thing(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    deleted = await _storage(ctx).delete(_type(ctx, args["type"]).name, record_id(args["thing"]))
    if deleted is not None:
        ctx.changes.add(deleted)
    return {"deleted": deleted is not None}


async def delete_list(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    ids = [record_id(thing) for thing in _things(args["things"])]
    changes = await _storage(ctx).delete_many(_type(ctx, args["type"]).name, ids)
    ctx.changes.add(*changes)
    count = len(changes)
    return {"deleted": count}


async def get_thing(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any] | None:
    if args.get("thing") in (None, ""):
        return None
    name = _type(ctx, args["type"]).name
    found = await _storage(ctx).get(name, record_id(args["thing"]))
    shown = ctx.viewer.sift(name, found)
    if found is not None and shown is None:
        ctx.remark(hidden_by_privacy=1)
    return shown


async def search(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    spec = _type(ctx, args["type"])
    constraints = await located_constraints(
        ctx, [constraint.checked(spec, c) for c in args.get("constraints") or []])
    sort = [SortKey(s["key"], bool(s.get("descending", False))) for s in args.get("sort") or []]
    limit, cursor = _limit(args.get("limit")), args.get("cursor") or None
    privacy = ctx.viewer.of(spec.name)
    if privacy is None:
        page = await _storage(ctx).search(spec.name, constraints, sort, limit, cursor)
    else:
        page = await private_search(ctx, _storage(ctx), privacy, spec.name, constraints, sort,
                                    limit, cursor)
    page = _within(page, ctx.settings.max_page_bytes, cursor)
    return {"results": page.results, "count": page.count, "remaining": page.remaining,
            "cursor": page.cursor}


def _within(page: Page, budget: int, cursor: str | None) -> Page:
    """The page cut before the record that would take it past `budget` bytes of JSON (but
    with one record at least), with the cursor to the rest."""
    used = 0
    for index, record in enumerate(page.results):
        used += size_over(record, budget)
        if used > budget:
            kept = max(index, 1)
            if kept == len(page.results):
                break
            return codec.page(page.results[:kept], page.count, codec.decode_cursor(cursor))
    return page


def _limit(value: Any) -> int:
    """A page size from 1 to `MAX_PAGE`; no limit is a page of `MAX_PAGE` (with a cursor)."""
    if value is None or value == "":
        return MAX_PAGE
    try:
        limit = int(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError("the search limit must be a whole number") from exc
    if not 1 <= limit <= MAX_PAGE or isinstance(value, bool):
        raise ValidationError(f"the search limit must be between 1 and {MAX_PAGE}")
    return limit


def _things(value: Any) -> list[Any]:
    if isinstance(value, dict) and isinstance(value.get("results"), list):
        return list(value["results"])  # the result of a search step
    if isinstance(value, list):
        return value
    raise RunError(f"expected a list of records or ids, got {value!r}")


def check_record(check: StepCheck, args: Mapping[str, Any]) -> None:
    """The data type exists; fields, constraints and sort keys are its own, and constant
    values fit their fields."""
    spec = check.data_type(args.get("type", ""), check.base + "/type")
    if spec is None:
        return
    fields = args.get("fields") or {}
    for key, value in fields.items() if isinstance(fields, dict) else ():
        pointer = ptr.join(check.base, "fields", key)
        if _known_field(check, spec, pointer, key, system=False):
            field = spec.fields[key]
            check.check_value(pointer, value, field.type, field.list)
    increment = args.get("increment") or {}
    for key, value in increment.items() if isinstance(increment, dict) else ():
        _check_increment(check, spec, key, value, set(fields) if isinstance(fields, dict)
                         else set())
    for index, item in enumerate(args.get("constraints") or []):
        _check_constraint(check, spec, f"{check.base}/constraints/{index}", item)
    for index, item in enumerate(args.get("sort") or []):
        _known_field(check, spec, f"{check.base}/sort/{index}/key", item["key"], system=True)


def _known_field(check: StepCheck, spec: TypeSpec, pointer: str, key: str, *,
                 system: bool) -> bool:
    if key in spec.fields or (system and key in SYSTEM_KEYS):
        return True
    check.error(pointer, "ref.unknown-field",
                f"data type '{spec.name}' has no field '{key}'" + did_you_mean(key, spec.fields),
                key=pointer.split("/")[-2] in ("fields", "increment"))
    return False


def _check_increment(check: StepCheck, spec: TypeSpec, key: str, value: Any,
                     set_too: set[str]) -> None:
    pointer = ptr.join(check.base, "increment", key)
    if not _known_field(check, spec, pointer, key, system=False):
        return
    field = spec.fields[key]
    if field.type not in _NUMERIC or field.list:
        shown = f"a list of {field.type}" if field.list else field.type
        check.error(pointer, "increment.mismatch",
                    f"'increment' applies to number and integer fields; '{key}' is {shown}",
                    key=True)
    elif key in set_too:
        check.error(pointer, "increment.mismatch",
                    f"'{key}' is both set (in `fields`) and incremented", key=True)
    else:
        check.check_value(pointer, value, field.type, False)


def _check_constraint(check: StepCheck, spec: TypeSpec, pointer: str,
                      item: Mapping[str, Any]) -> None:
    if _known_field(check, spec, pointer + "/key", item["key"], system=True):
        constraint.check(check, spec, pointer, item)


def _note_search(result: Any) -> str | None:
    if isinstance(result, dict) and not result.get("count"):
        return "the search came back empty"
    return None


ACTIONS = (
    Action("create_thing", create_thing, check=check_record, writes=True),
    Action("make_changes", make_changes, check=check_record, writes=True),
    Action("make_changes_to_list", make_changes_to_list, check=check_record, writes=True),
    Action("delete_thing", delete_thing, check=check_record, writes=True),
    Action("delete_list", delete_list, check=check_record, writes=True),
    Action("get_thing", get_thing, check=check_record),
    Action("search", search, check=check_record, note=_note_search),
)
