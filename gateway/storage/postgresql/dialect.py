"""How search keys and values look in PostgreSQL's JSONB operators.

Declared scalar fields get a typed expression (numeric for numbers, text in the "C"
collation otherwise), the same text the per-type expression index is built on, so equality,
ranges and sorting use the index. The "C" collation makes text order byte order, as on
SQLite, and dates (fixed-width ISO text) sort in time order. Undeclared fields, lists and
objects are compared as JSONB.
"""

from __future__ import annotations

from typing import Any

from gateway.core.encoding import dumps
from gateway.storage.common.codec import check_name, to_storable
from gateway.storage.common.geo import EARTH_RADIUS_KM, Near
from gateway.storage.common.query import Term, declared
from gateway.storage.contract import SYSTEM_KEYS, TypeSpec

_NUMERIC = frozenset({"number", "integer"})
_DOCUMENTS = frozenset({"object", "geographic_address"})  # compared as JSONB


def _same(value: Any) -> Any:
    return value


def _text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    value = to_storable(None, value)
    return value if value is None or isinstance(value, str) else str(value)


def _json(value: Any) -> str:
    return dumps(to_storable(None, value))


class PostgresDialect:
    """Expressions over `gateway_records` for PostgreSQL."""

    def term(self, spec: TypeSpec | None, key: str) -> Term:
        if key in SYSTEM_KEYS:
            cast = "text[]" if key in ("_id", "created_by") else "timestamptz[]"
            return Term("id" if key == "_id" else key, "%s", _same, array=cast)
        name = check_name(key, "field")
        field = declared(spec, key)
        if field is None or field.list or field.type in _DOCUMENTS:
            return Term(f"(data->'{name}')", "%s::jsonb", _json, key, True, "jsonb[]")
        if field.type in _NUMERIC:
            return Term(f"((data->>'{name}')::numeric)", "%s::numeric", _same, key,
                        array="numeric[]")
        return Term(f"((data->>'{name}') COLLATE \"C\")", "%s", _text, key, array="text[]")

    def contains(self, term: Term, value: Any) -> tuple[str, list[Any]]:
        if term.field is None or not term.is_list:
            return f"strpos({term.expr}::text, %s) > 0", [str(value)]
        return f"(data->'{term.field}') @> %s::jsonb", [_json([value])]

    def text_contains(self, term: Term, value: str) -> tuple[str, list[Any]]:
        text = term.expr if term.field is None else f"(data->>'{term.field}')"
        return f"strpos(lower({text}::text), %s) > 0", [value.lower()]

    def is_empty(self, term: Term) -> str:
        if term.field is None:
            return f"({term.expr} IS NULL OR {term.expr}::text = '')"
        value = f"(data->'{term.field}')"
        return f"({value} IS NULL OR {value} IN ('null'::jsonb, '\"\"'::jsonb, '[]'::jsonb))"

    def any_of(self, term: Term, values: list[Any]) -> tuple[str, list[Any]]:
        return f"{term.expr} = ANY(%s::{term.array})", [values]

    def index_columns(self, expr: str) -> str:
        return expr

    def coordinates(self, field: str) -> tuple[str, str]:
        name = check_name(field, "field")
        return (f"((data->'{name}'->>'lat')::double precision)",
                f"((data->'{name}'->>'lng')::double precision)")

    def within(self, lat: str, lng: str, near: Near) -> tuple[str, list[Any]]:
        # The haversine of `geo.distance_km`, in the same order of operations.
        haversine = (
            f"power(sin(radians({lat} - %s::double precision) / 2), 2)"
            f" + cos(radians(%s::double precision)) * cos(radians({lat}))"
            f" * power(sin(radians({lng} - %s::double precision) / 2), 2)")
        return (f"2 * {EARTH_RADIUS_KM} * asin(least(1.0, sqrt({haversine})))"
                " <= %s::double precision", [near.lat, near.lat, near.lng, near.km])
