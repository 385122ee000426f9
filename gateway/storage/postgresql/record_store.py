"""Records on PostgreSQL: `RecordStore` over a `PostgresConnector`.

Each write is one statement that also returns what it changed: `DELETE … RETURNING` gives
the rows as they were, and an update reads and locks its rows in the statement that writes
them, so each `Change` holds the states the write went from and to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.core.clock import utc_now
from gateway.core.ids import new_id
from gateway.storage.common import codec, limits
from gateway.storage.common.catalog import USER, StoredRow, the_change
from gateway.storage.common.query import compile_order, compile_where
from gateway.storage.common.sql_files import queries
from gateway.storage.contract import Change, Constraint, Page, SortKey
from gateway.storage.postgresql.connector import PostgresConnector, jsonb
from gateway.storage.postgresql.dialect import PostgresDialect
from gateway.storage.postgresql.user_store import update_users

Q = queries("postgresql")
_DIALECT = PostgresDialect()


def _stored(row: Sequence[Any]) -> StoredRow:
    return StoredRow(row[0], row[1], dict(row[2]), row[3].astimezone(UTC),
                     row[4].astimezone(UTC), row[5])


def _added(data: str, n: int, step: limits.Increment) -> str:
    """`data` with the `n`th incremented field set to its current value plus the amount,
    in bigint or double arithmetic as the field is whole or not (as SQLite computes it)."""
    kind = "bigint" if step.whole else "float8"
    total = f"coalesce((r.data->>%(key{n})s)::{kind}, 0) + %(amount{n})s::{kind}"
    return f"jsonb_set({data}, %(path{n})s::text[], to_jsonb({total}))"


def _in_order(ids: Sequence[str], rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """`RETURNING` rows (in no particular order) in the order of the ids asked for."""
    order = {id: n for n, id in enumerate(ids)}
    return sorted(rows, key=lambda row: order[row[0]])


class PostgresRecords:
    """`RecordStore` on a PostgreSQL database."""

    def __init__(self, connector: PostgresConnector) -> None:
        self._db = connector
        self._catalog = connector.catalog

    def _record(self, row: Sequence[Any]) -> dict[str, Any]:
        return self._catalog.record(_stored(row))

    async def create(
        self, type: str, fields: Mapping[str, Any], created_by: str | None = None, *,
        at: datetime | None = None,
    ) -> Change:
        now = at or utc_now()
        # Round-trip through JSON so the caller gets exactly what a later get() returns.
        stored = codec.json_roundtrip(self._catalog.with_defaults(type, fields))
        id = new_id(now)
        insert = self._db.execute if self._catalog.unique_fields(type) else self._db.execute_later
        await insert(Q["create_record"], (id, type, jsonb(stored), now, now, created_by))
        return Change(type, id, None, self._record((id, type, stored, now, now, created_by)))

    async def get(self, type: str, id: str) -> dict[str, Any] | None:
        if not limits.usable_id(id):
            return None
        rows = await self._db.fetch(Q["get_record"], (id, type))
        return self._record(rows[0]) if rows else None

    async def update(self, type: str, id: str, fields: Mapping[str, Any],
                     increment: Mapping[str, Any] | None = None, *,
                     at: datetime | None = None) -> Change:
        return the_change(await self.update_many(type, [id], fields, increment, at=at),
                          type, id)

    async def update_many(
        self, type: str, ids: Sequence[str], fields: Mapping[str, Any],
        increment: Mapping[str, Any] | None = None, *, at: datetime | None = None,
    ) -> list[Change]:
        steps = self._catalog.changes(type, fields, increment)
        ids = [id for id in ids if limits.usable_id(id)]
        params = {"ids": ids, "type": type, "changes": jsonb(dict(fields)),
                  "now": at or utc_now()}
        data = "r.data || %(changes)s"
        for n, step in enumerate(steps):  # each incremented field, added up in the UPDATE
            data = _added(data, n, step)
            params |= {f"key{n}": step.key, f"path{n}": [step.key], f"amount{n}": step.amount}
        sql = Q["update_records"].format(data=data)
        try:
            if type == USER and "email" in fields:  # with the log-ins, in one transaction
                rows = await self._db.atomic(lambda conn: update_users(conn, sql, params))
            else:
                rows = await self._db.fetch(sql, params, write=True)
        except (limits.NotANumberError, limits.OutOfRangeError) as exc:
            keys = [step.key for step in steps]
            raise (limits.not_a_number(keys, type) if isinstance(exc, limits.NotANumberError)
                   else limits.out_of_range(keys, type)) from exc
        return [self._updated(row) for row in _in_order(ids, rows)]

    def _updated(self, row: Sequence[Any]) -> Change:
        """A change from a row of `update_records`: the old row, then the new data and
        modified_at."""
        before = row[:6]
        after = (*before[:2], row[6], before[3], row[7], before[5])
        return Change(row[1], row[0], self._record(before), self._record(after))

    async def delete(self, type: str, id: str) -> Change | None:
        changes = await self.delete_many(type, [id])
        return changes[0] if changes else None

    async def delete_many(self, type: str, ids: Sequence[str]) -> list[Change]:
        ids = [id for id in ids if limits.usable_id(id)]
        rows = await self._db.fetch(Q["delete_records"], (ids, type), write=True)
        return [Change(row[1], row[0], self._record(row), None) for row in _in_order(ids, rows)]

    async def search(
        self,
        type: str,
        constraints: Sequence[Constraint] = (),
        sort: Sequence[SortKey] = (),
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        spec = self._catalog.types.get(type)
        where = compile_where(_DIALECT, spec, type, constraints)
        order = compile_order(_DIALECT, spec, sort)
        offset = codec.decode_cursor(cursor)
        sql = Q["search_records"].format(where=where.sql, order=order)
        rows = await self._db.fetch(sql, [*where.params, *where.params, limit, offset])
        if rows:
            total = int(rows[0][0])
        else:
            count = await self._db.fetch(Q["count_records"].format(where=where.sql), where.params)
            total = int(count[0][0])
        return codec.page([self._record(row[1:]) for row in rows], total, offset)
