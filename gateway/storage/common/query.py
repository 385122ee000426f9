"""Compiling searches (constraints and sort keys) and per-type indexes into SQL.

The shape of a query is shared; each backend supplies a `Dialect` that says how a key
becomes an expression and how a value is bound. A declared field's expression is the very
text its index was created with, so the planner can match the two.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.errors import ValidationError
from gateway.storage.common.codec import check_name
from gateway.storage.common.geo import GEOGRAPHIC_ADDRESS, Near, box
from gateway.storage.common.limits import check_search
from gateway.storage.contract import CONSTRAINTS, Constraint, FieldSpec, SortKey, TypeSpec


@dataclass(frozen=True, slots=True)
class Term:
    """A search key as SQL: its expression and how values compared with it are bound."""

    expr: str
    placeholder: str
    convert: Callable[[Any], Any]
    field: str | None = None  # the JSON key, None for a system column
    is_list: bool = False
    array: str = ""  # PostgreSQL: the type of an array of such values


@dataclass(frozen=True, slots=True)
class IndexDef:
    name: str
    type_name: str
    field: str
    unique: bool
    expression: str


class Dialect(Protocol):
    def term(self, spec: TypeSpec | None, key: str) -> Term: ...
    def contains(self, term: Term, value: Any) -> tuple[str, list[Any]]: ...
    def text_contains(self, term: Term, value: str) -> tuple[str, list[Any]]: ...
    def is_empty(self, term: Term) -> str: ...
    # `term` is one of `values` (already converted): ONE bound parameter holds them all, so
    # the SQL text is the same whatever the length of the list.
    def any_of(self, term: Term, values: list[Any]) -> tuple[str, list[Any]]: ...
    def index_columns(self, expr: str) -> str: ...
    # The latitude and longitude of a geographic address field, as its index has them.
    def coordinates(self, field: str) -> tuple[str, str]: ...
    # The exact test: the great-circle distance from `near`'s origin within its range.
    def within(self, lat: str, lng: str, near: Near) -> tuple[str, list[Any]]: ...


@dataclass(frozen=True, slots=True)
class Where:
    sql: str
    params: list[Any]


def literal(text: str) -> str:
    """A SQL string literal for a name already checked by `check_name` (no quotes in it)."""
    return f"'{check_name(text, 'type')}'"


def compile_where(
    dialect: Dialect, spec: TypeSpec | None, type_name: str, constraints: Sequence[Constraint]
) -> Where:
    # The type is inlined, not bound: a partial index (`WHERE type = 'lead'`) is only
    # chosen when the planner can see that the query implies its predicate.
    parts, params = [f"type = {literal(type_name)}"], []
    for constraint in constraints:
        check_search(constraint.key, constraint.value)
        sql, values = _compile_one(dialect, spec, constraint)
        parts.append(sql)
        params.extend(values)
    return Where(" AND ".join(parts), params)


def _compile_one(dialect: Dialect, spec: TypeSpec | None, c: Constraint) -> tuple[str, list[Any]]:
    if c.constraint not in CONSTRAINTS:
        raise ValidationError(f"unknown constraint {c.constraint!r}")
    if c.constraint == "geographic_search":
        return _compile_near(dialect, spec, c)
    term = dialect.term(spec, c.key)
    kind = c.constraint
    if kind in ("is_empty", "is_not_empty"):
        sql = dialect.is_empty(term)
        return (sql if kind == "is_empty" else f"NOT {sql}"), []
    if kind in ("in", "not_in"):
        return _compile_in(dialect, term, c.value, negate=kind == "not_in")
    if kind in ("contains", "not_contains"):
        sql, params = dialect.contains(term, c.value)
        # A missing field makes the test NULL; "does not contain" must then be true.
        return (sql if kind == "contains" else f"NOT coalesce({sql}, false)"), params
    if kind == "text_contains":
        return dialect.text_contains(term, str(c.value))
    if kind == "not_text_contains":  # a missing field contains no text
        sql, params = dialect.text_contains(term, str(c.value))
        return f"NOT coalesce({sql}, false)", params
    value = term.convert(c.value)
    if kind == "equals":
        return (
            (f"{term.expr} IS NULL", [])
            if value is None
            else (f"{term.expr} = {term.placeholder}", [value])
        )
    if kind == "not_equal":
        return (
            (f"{term.expr} IS NOT NULL", [])
            if value is None
            else (f"({term.expr} IS NULL OR {term.expr} <> {term.placeholder})", [value])
        )
    operator = ">" if kind == "greater_than" else "<"
    return f"{term.expr} {operator} {term.placeholder}", [value]


def _compile_in(dialect: Dialect, term: Term, values: Any,
                negate: bool) -> tuple[str, list[Any]]:
    if not isinstance(values, list | tuple):
        raise ValidationError("the value of `in` and `not_in` must be a list")
    if not values:
        return ("1 = 1" if negate else "1 = 0"), []
    sql, params = dialect.any_of(term, [term.convert(v) for v in values])
    if negate:
        return f"({term.expr} IS NULL OR NOT coalesce({sql}, false))", params
    return sql, params


def _compile_near(dialect: Dialect, spec: TypeSpec | None,
                  c: Constraint) -> tuple[str, list[Any]]:
    """A bounding box the index seeks (lat, then lng), then the exact distance."""
    field, near = declared(spec, c.key), c.value
    if field is None or field.type != GEOGRAPHIC_ADDRESS or field.list:
        raise ValidationError(f"geographic_search applies to a geographic_address field; "
                              f"{c.key!r} is not one")
    if not isinstance(near, Near) or near.lat is None or near.lng is None:
        raise ValidationError("a geographic_search needs an origin with lat and lng")
    lat, lng = dialect.coordinates(c.key)
    bounds = box(near.lat, near.lng, near.km)
    ph = dialect.term(None, "_id").placeholder  # a plain bound value, on either backend
    parts, params = [f"{lat} BETWEEN {ph} AND {ph}"], [bounds.lat_min, bounds.lat_max]
    ranges = [f"{lng} BETWEEN {ph} AND {ph}" for _ in bounds.lng_ranges]
    if ranges:
        parts.append(ranges[0] if len(ranges) == 1 else f"({' OR '.join(ranges)})")
        params += [bound for pair in bounds.lng_ranges for bound in pair]
    exact, more = dialect.within(lat, lng, near)
    return f"({' AND '.join([*parts, exact])})", [*params, *more]


_DIRECTION = {False: "ASC NULLS LAST", True: "DESC NULLS FIRST"}


def compile_order(
    dialect: Dialect, spec: TypeSpec | None, sort: Sequence[SortKey], plain: bool = False
) -> str:
    """ORDER BY terms; empty values sort last ascending, first descending, on both backends.

    The record id breaks ties, so paging with a cursor never repeats or skips a record.
    `plain` writes each term as `+expr`, which keeps SQLite from walking an index in sort
    order and filtering, when a seek on a constraint's index is the better plan (SQLite has
    no statistics to tell the two apart on a fresh file).
    """
    mark = "+" if plain else ""
    if not sort:
        return f"{mark}created_at, {mark}id"
    terms = [
        f"{mark}{dialect.term(spec, key.key).expr} {_DIRECTION[key.descending]}" for key in sort
    ]
    return ", ".join([*terms, f"{mark}id"])


def seeks_an_index(spec: TypeSpec | None, constraints: Sequence[Constraint]) -> bool:
    """True when a constraint can seek a declared field's index (equality or `in`, or a
    geographic_search's box)."""
    for c in constraints:
        field = declared(spec, c.key)
        if c.constraint == "geographic_search":
            return True
        if (
            field
            and not field.list
            and (field.unique or field.indexed)
            and c.constraint in ("equals", "in")
        ):
            return True
    return False


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:16]


def index_definitions(dialect: Dialect, spec: TypeSpec) -> list[IndexDef]:
    """The expression indexes a type's `unique` and `indexed` fields need.

    Names are deterministic and include a hash of what the index is, so a changed
    declaration yields a new name and the stale index can be dropped.
    """
    defs = []
    for field in spec.fields.values():
        geographic = field.type == GEOGRAPHIC_ADDRESS
        if field.list or not (field.unique or field.indexed or geographic):
            continue
        if geographic:  # always indexed: geographic_search seeks its coordinates
            expression = dialect.index_columns(", ".join(dialect.coordinates(field.name)))
        else:
            expression = dialect.index_columns(dialect.term(spec, field.name).expr)
        kind = "ux" if field.unique and not geographic else "ix"
        digest = hashlib.sha1(f"{spec.name}\0{field.name}\0{kind}\0{expression}".encode())
        name = f"gateway_{kind}_{_slug(spec.name)}_{_slug(field.name)}_{digest.hexdigest()[:10]}"
        defs.append(IndexDef(name, spec.name, field.name, kind == "ux", expression))
    return defs


def declared(spec: TypeSpec | None, key: str) -> FieldSpec | None:
    return spec.fields.get(key) if spec is not None else None
