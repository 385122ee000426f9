"""A search's constraints checked: each value in the type of the key it tests, when the
search runs (`checked`) and, for constant values, when the config loads (`check`).

The system keys are fields like the others: `_id` and `created_by` hold record ids (a
record stands for its id), `created_at` and `modified_at` dates. A value that does not fit
is a `ValidationError` (400 `INVALID_DATA`) before any SQL runs: PostgreSQL would fail to
cast it (a 500), and SQLite would compare it with the stored text and answer nonsense.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.core.errors import ValidationError
from gateway.runtime.action_spec import StepCheck
from gateway.runtime.coercion import convert_value
from gateway.storage.common.geo import GEOGRAPHIC_ADDRESS, near_value
from gateway.storage.contract import SYSTEM_KEYS, Constraint, FieldSpec, TypeSpec

VALUELESS = frozenset({"is_empty", "is_not_empty"})
_LISTS = frozenset({"in", "not_in"})
_TEXT = frozenset({"text_contains", "not_text_contains"})
_PART = frozenset({"contains", "not_contains"})
_DATES = frozenset({"created_at", "modified_at"})
NEAR = "geographic_search"
_ON_ADDRESSES = VALUELESS | {NEAR}  # what applies to a geographic address
# How messages name the system keys: as a workflow writes them, and as the Data API does.
_SHOWN = {"_id": "_id", "created_at": "created_at (Created Date)",
          "modified_at": "modified_at (Modified Date)", "created_by": "created_by (Created By)"}


def system_field(spec: TypeSpec, key: str) -> FieldSpec:
    """A system key as a field: a date, or the id of one of the type's records or a user."""
    if key in _DATES:
        return FieldSpec(key, "date")
    return FieldSpec(key, spec.name if key == "_id" else "user")


def checked(spec: TypeSpec, raw: Mapping[str, Any]) -> Constraint:
    """A search condition (`{key, constraint, value}`), its value in the key's type. An
    undeclared key is compared as it is (records may hold undeclared keys)."""
    key, kind, value = raw["key"], raw["constraint"], raw.get("value")
    if kind in VALUELESS:
        return Constraint(key, kind, value)
    field = spec.fields.get(key)
    if kind == NEAR or (field is not None and field.type == GEOGRAPHIC_ADDRESS):
        _on_address(spec, key, kind, field)
        return Constraint(key, kind, near_value(value))  # its origin is located later
    if key in SYSTEM_KEYS:
        return Constraint(key, kind, _system_value(spec, key, kind, value))
    if field is None:
        return Constraint(key, kind, value)
    if kind in _TEXT:
        return Constraint(key, kind, str(value))
    if field.options is not None:
        return Constraint(key, kind, _option(spec, field, kind, value))
    return Constraint(key, kind, _fit(spec, f"field {key}", field.type, kind, value))


def _on_address(spec: TypeSpec, key: str, kind: str, field: FieldSpec | None) -> None:
    """geographic_search tests a (single) geographic address, and only it applies there."""
    if field is None or field.type != GEOGRAPHIC_ADDRESS or field.list:
        raise ValidationError(f"'{NEAR}' applies to a geographic_address field; {key!r} of "
                              f"{spec.name} is not one")
    if kind != NEAR:
        raise ValidationError(f"'{kind}' does not apply to {key!r} of {spec.name}, a "
                              f"geographic address: use {NEAR}, is_empty or is_not_empty")


def _option(spec: TypeSpec, field: FieldSpec, kind: str, value: Any) -> Any:
    """An option set field is compared by its options' values (a display finds its
    option); null stays null."""
    assert field.options is not None
    options = field.options
    try:
        if kind in _LISTS:
            items = value if isinstance(value, list) else [value]
            return [None if item is None else str(options.find(item)) for item in items]
        return None if value is None else str(options.find(value))
    except ValueError as exc:
        raise ValidationError(f"invalid value for field {field.name} of {spec.name} "
                              f"(must be {options.describe()})") from exc


def _system_value(spec: TypeSpec, key: str, kind: str, value: Any) -> Any:
    if kind in _TEXT | _PART:
        if key in _DATES:
            raise ValidationError(
                f"'{kind}' does not apply to {_SHOWN[key]} of {spec.name}, a date: compare "
                "it with equals, not_equal, less_than, greater_than, in or not_in")
        try:
            return convert_value(value, "text")  # a part of an id: text, never null
        except ValueError as exc:
            raise _invalid(spec, _SHOWN[key], "text") from exc
    return _fit(spec, _SHOWN[key], system_field(spec, key).type, kind, value)


def _fit(spec: TypeSpec, name: str, type_name: str, kind: str, value: Any) -> Any:
    """`value` (each item of it, for `in` and `not_in`) in `type_name`; null stays null."""
    try:
        if kind in _LISTS:
            items = value if isinstance(value, list) else [value]
            return [None if item is None else convert_value(item, type_name) for item in items]
        return None if value is None else convert_value(value, type_name)
    except ValueError as exc:
        raise _invalid(spec, name, type_name) from exc


def _invalid(spec: TypeSpec, name: str, type_name: str) -> ValidationError:
    shown = type_name if name.startswith("field ") else _described(spec, type_name)
    return ValidationError(f"invalid value for {name} of {spec.name} (must be {shown})")


def _described(spec: TypeSpec, type_name: str) -> str:
    return {"date": "a date", "text": "text"}.get(type_name, "a record id")


def check(check: StepCheck, spec: TypeSpec, pointer: str, item: Mapping[str, Any]) -> None:
    """At load time: the constraint applies to its key's type, and a constant value fits
    it (templates are checked when they run). The key is known to be a field or a system
    key; an id's text may be searched in, as at run time."""
    key, kind = item["key"], item["constraint"]
    if key in SYSTEM_KEYS and key not in _DATES and kind in _TEXT | _PART:
        check.check_value(pointer + "/value", item.get("value"), "text", False)
        return
    field = system_field(spec, key) if key in SYSTEM_KEYS else spec.fields.get(key)
    if field is None:
        return
    shown = f"a list of {field.type}" if field.list else field.type
    if kind == NEAR or (field.type == GEOGRAPHIC_ADDRESS and kind not in _ON_ADDRESSES):
        if field.type != GEOGRAPHIC_ADDRESS or field.list or kind != NEAR:
            check.error(pointer + "/constraint", "constraint.mismatch",
                        f"'{kind}' does not apply to '{key}', {shown}: only {NEAR}, "
                        "is_empty and is_not_empty apply to a geographic_address, and "
                        f"{NEAR} to nothing else")
        return
    if kind in _PART and not field.list:
        check.error(pointer + "/constraint", "constraint.mismatch",
                    f"'{kind}' applies to list fields; '{key}' is not a list")
    elif kind in _TEXT and (field.type != "text" or field.list):
        check.error(pointer + "/constraint", "constraint.mismatch",
                    f"'{kind}' applies to text fields; '{key}' is {shown}")
    elif kind not in VALUELESS | _TEXT:
        _check_value(check, pointer + "/value", item.get("value"), field.type, kind)


def _check_value(check: StepCheck, pointer: str, value: Any, type_name: str,
                 kind: str) -> None:
    if kind in _LISTS and isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(check, f"{pointer}/{index}", item, type_name, "equals")
    elif value is not None:
        check.check_value(pointer, value, type_name, False)
