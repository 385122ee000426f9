"""How search keys and values look in SQLite's JSON functions."""

from __future__ import annotations

from typing import Any

from gateway.core.encoding import dumps
from gateway.storage.common.codec import check_name, to_storable
from gateway.storage.common.geo import Near
from gateway.storage.common.query import Term, declared
from gateway.storage.contract import SYSTEM_KEYS, TypeSpec

# Python's lower() so that non-ASCII text folds the same way as on PostgreSQL; SQLite's own
# lower() only folds ASCII.
LOWER_FUNCTION = "gateway_lower"
# The great-circle distance in km (`geo.distance_km`), registered on every connection.
DISTANCE_FUNCTION = "gateway_distance_km"


def fold(value: Any) -> str | None:
    return None if value is None else str(value).lower()


_PLAIN = frozenset({str, int, float})


def _value(value: Any) -> Any:
    if type(value) in _PLAIN:  # the common case, first: an `in` list may hold 100,000
        return value
    if isinstance(value, dict | list):
        return dumps(value)  # compared with json_extract's compact text of the sub-document
    return to_storable(None, value)


def json_path(field: str) -> str:
    return f"'$.\"{check_name(field, 'field')}\"'"


class SqliteDialect:
    """Expressions over `gateway_records`: system keys are columns, fields `json_extract`."""

    def term(self, spec: TypeSpec | None, key: str) -> Term:
        if key in SYSTEM_KEYS:
            return Term("id" if key == "_id" else key, "?", _value)
        field = declared(spec, key)
        expr = f"json_extract(data, {json_path(key)})"
        return Term(expr, "?", _value, key, field is None or field.list)

    def contains(self, term: Term, value: Any) -> tuple[str, list[Any]]:
        if term.field is None or not term.is_list:
            return f"instr({term.expr}, ?) > 0", [str(value)]
        # json_each over a scalar yields the scalar itself, so an undeclared field that
        # holds a single value behaves like a one-element list.
        sql = f"EXISTS (SELECT 1 FROM json_each(data, {json_path(term.field)}) WHERE value = ?)"
        return sql, [_value(value)]

    def text_contains(self, term: Term, value: str) -> tuple[str, list[Any]]:
        return f"instr({LOWER_FUNCTION}({term.expr}), ?) > 0", [value.lower()]

    def is_empty(self, term: Term) -> str:
        if term.field is None:
            return f"({term.expr} IS NULL OR {term.expr} = '')"
        path = json_path(term.field)
        return (
            f"(coalesce(json_type(data, {path}), 'null') = 'null' OR {term.expr} = ''"
            f" OR (json_type(data, {path}) = 'array' AND json_array_length(data, {path}) = 0))"
        )

    def any_of(self, term: Term, values: list[Any]) -> tuple[str, list[Any]]:
        # json_each yields each element as json_extract would: numbers as numbers, text as
        # text, and sub-documents as their JSON text (which `_value` already made them).
        return f"{term.expr} IN (SELECT value FROM json_each(?))", [dumps(values)]

    def index_columns(self, expr: str) -> str:
        # `type` leads even though the index is partial on it: without statistics SQLite
        # would otherwise prefer the (type, created_at) index for `type = ? AND expr > ?`.
        return f"type, {expr}"

    def coordinates(self, field: str) -> tuple[str, str]:
        name = check_name(field, "field")
        return (f"json_extract(data, '$.\"{name}\".lat')",
                f"json_extract(data, '$.\"{name}\".lng')")

    def within(self, lat: str, lng: str, near: Near) -> tuple[str, list[Any]]:
        return f"{DISTANCE_FUNCTION}({lat}, {lng}, ?, ?) <= ?", [near.lat, near.lng, near.km]
