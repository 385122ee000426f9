"""Records on SQLite: `RecordStore` over a `SqliteConnector`.

A write reads the rows it changes inside its own writer job, so each `Change` holds the
states the write went from and to, in one transaction. A search is read on the event loop
when it is bounded (a small page through an index, few matches to count), otherwise on a
reader thread.
"""

from __future__ import annotations

import collections
import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.core.clock import utc_now
from gateway.core.encoding import dumps, iso, parse_iso
from gateway.core.ids import new_id
from gateway.storage.common import codec, limits
from gateway.storage.common.catalog import USER, StoredRow, the_change
from gateway.storage.common.query import compile_order, compile_where, seeks_an_index
from gateway.storage.common.sql_files import queries
from gateway.storage.contract import Change, Constraint, Page, SortKey
from gateway.storage.sqlite.connector import SqliteConnector
from gateway.storage.sqlite.dialect import SqliteDialect
from gateway.storage.sqlite.user_store import follow_email

_OUR_INDEX = re.compile(r"INDEX gateway_[iu]x_|PRIMARY KEY")
Row = tuple[str, str, str, str, str, str | None]
Q = queries("sqlite")
_DIALECT = SqliteDialect()
QUICK_ROWS = 1000
QUICK_PLANS = 256  # plans remembered, by SQL text (least recently used ones go first)
_ALL = 2**62  # SQLite's "no limit"


class SqliteRecords:
    """`RecordStore` on one SQLite file."""

    def __init__(self, connector: SqliteConnector) -> None:
        self._db = connector
        self._catalog = connector.catalog
        self._quick: collections.OrderedDict[str, bool] = collections.OrderedDict()

    def _record(self, row: Row) -> dict[str, Any]:
        stored = StoredRow(row[0], row[1], json.loads(row[2]), parse_iso(row[3]),
                           parse_iso(row[4]), row[5])
        return self._catalog.record(stored)

    def _change(self, before: Row | None, after: Row | None) -> Change:
        row = after or before
        assert row is not None
        return Change(row[1], row[0], None if before is None else self._record(before),
                      None if after is None else self._record(after))

    async def create(
        self, type: str, fields: Mapping[str, Any], created_by: str | None = None, *,
        at: datetime | None = None,
    ) -> Change:
        now = at or utc_now()
        text = dumps(self._catalog.with_defaults(type, fields))
        stamp = iso(now)
        row: Row = (new_id(now), type, text, stamp, stamp, created_by)
        insert = (self._db.write if self._catalog.unique_fields(type) else self._db.write_later)
        await insert(lambda conn: conn.execute(Q["create_record"], row))
        return self._change(None, row)

    async def get(self, type: str, id: str) -> dict[str, Any] | None:
        if not limits.usable_id(id):
            return None
        row = await self._db.read_near(
            lambda conn: conn.execute(Q["get_record"], (id, type)).fetchone())
        return None if row is None else self._record(row)

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
        changes = json.loads(dumps(dict(fields)))
        stamp = iso(at or utc_now())
        ids = [id for id in ids if limits.usable_id(id)]
        # The writer runs one job at a time: reading the current values and writing the
        # sums in one job is as atomic as one statement.
        pairs = await self._db.write(lambda conn: _update_rows(conn, type, ids, (changes, steps),
                                                               stamp))
        return [self._change(before, after) for before, after in pairs]

    async def delete(self, type: str, id: str) -> Change | None:
        changes = await self.delete_many(type, [id])
        return changes[0] if changes else None

    async def delete_many(self, type: str, ids: Sequence[str]) -> list[Change]:
        ids = [id for id in ids if limits.usable_id(id)]
        rows = await self._db.write(lambda conn: _delete_rows(conn, type, ids))
        return [self._change(row, None) for row in rows]

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
        order = compile_order(_DIALECT, spec, sort, plain=seeks_an_index(spec, constraints))
        offset = codec.decode_cursor(cursor)
        select = Q["search_records"].format(where=where.sql, order=order)
        count = Q["count_records"].format(where=where.sql)
        args = (
            select,
            [*where.params, _ALL if limit is None else limit, offset],
            count,
            where.params,
        )
        if self._db.writing():  # the run's own writes are in the writer's transaction
            rows, total = await self._db.write(lambda conn: _read_page(conn, *args, own=True))
            return codec.page([self._record(row) for row in rows], total, offset)
        quick_total = None
        if not _long_lists(constraints):
            rows, quick_total = self._db.read_here(lambda conn: self._read_quickly(
                conn, where.sql, where.params, args, limit, offset))
        if quick_total is None:
            rows, total = await self._db.read(lambda conn: _read_page(conn, *args))
        else:
            total = quick_total
        return codec.page([self._record(row) for row in rows], total, offset)

    def _read_quickly(self, conn: sqlite3.Connection, where: str, where_params: list[Any],
                      args: tuple[Any, ...], limit: int | None,
                      offset: int) -> tuple[list[Row], int | None]:
        """A search read on the event loop, when it is bounded: a small page through an
        index and at most `QUICK_ROWS` matches to count. Otherwise (None for the total) the
        caller reads on a reader thread: handing a read to a thread costs more than a small
        indexed read, but a large one must not hold up every other request."""
        select, params, count, _ = args
        if limit is None or limit + offset > QUICK_ROWS:
            return [], None
        if not (self._is_quick(conn, select, params) and self._is_quick(conn, count, where_params)):
            return [], None
        capped = Q["count_records_capped"].format(where=where)
        rows, total = _read_page(conn, select, params, capped, [*where_params, QUICK_ROWS + 1])
        return (rows, total) if total <= QUICK_ROWS else ([], None)

    def _is_quick(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> bool:
        """True when the plan only seeks one of our indexes (no scan, no sort of the rest)."""
        quick = self._quick.get(sql)
        if quick is None:
            plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            details = [str(row[3]) for row in plan.fetchall()]
            quick = self._quick[sql] = _is_quick_plan(details)
            if len(self._quick) > QUICK_PLANS:
                self._quick.popitem(last=False)
        else:
            self._quick.move_to_end(sql)
        return quick


def _long_lists(constraints: Sequence[Constraint]) -> bool:
    """True when an `in` list is too long to go through on the event loop."""
    return any(isinstance(c.value, list | tuple) and len(c.value) > QUICK_ROWS
               for c in constraints)


def _is_quick_plan(details: list[str]) -> bool:
    """True when every table access seeks one of our field indexes (or the primary key).

    Sorting the matches is tolerated after an equality seek (few rows match a value we
    index for lookups), not after a range seek, which may match most of the type.
    """
    equality = any(re.search(r"\(type=\? AND .*=\?\)$", d) for d in details)
    for detail in details:
        if detail.startswith("SCAN json_each"):
            continue  # the `in` list itself: at most QUICK_ROWS values (`_long_lists`)
        if detail.startswith("SCAN") or ("TEMP B-TREE" in detail and not equality):
            return False
        if detail.startswith("SEARCH") and not _OUR_INDEX.search(detail):
            return False
    return True


def _read_page(
    conn: sqlite3.Connection, select: str, params: list[Any], count: str, count_params: list[Any],
    own: bool = False,
) -> tuple[list[Row], int]:
    if own:  # in the writer's transaction: one snapshot already
        rows = conn.execute(select, params).fetchall()
        return rows, int(conn.execute(count, count_params).fetchone()[0])
    # One read transaction so that the page and the count come from the same snapshot.
    conn.execute("BEGIN")
    try:
        rows = conn.execute(select, params).fetchall()
        total = conn.execute(count, count_params).fetchone()[0]
    finally:
        conn.execute("COMMIT")
    return rows, int(total)


def _update_rows(
    conn: sqlite3.Connection, type: str, ids: list[str],
    change: tuple[dict[str, Any], limits.Increments], stamp: str
) -> list[tuple[Row, Row]]:
    """(before, after) for each record updated; runs in the writer's transaction."""
    changes, steps = change
    pairs: list[tuple[Row, Row]] = []
    for id in ids:
        row = conn.execute(Q["get_record"], (id, type)).fetchone()
        if row is None:
            continue
        data = json.loads(row[2]) | changes
        for step in steps:
            data[step.key] = limits.incremented(data.get(step.key), step, type)
        text = dumps(data)
        conn.execute(Q["update_record"], (text, stamp, id))
        if type == USER and "email" in changes:
            follow_email(conn, id, data.get("email"))
        pairs.append((row, (row[0], row[1], text, row[3], stamp, row[5])))
    return pairs


def _delete_rows(conn: sqlite3.Connection, type: str, ids: list[str]) -> list[Row]:
    """The rows deleted, as they were (`RETURNING`); runs in the writer's transaction."""
    rows = (conn.execute(Q["delete_record"], (id, type)).fetchone() for id in ids)
    return [row for row in rows if row is not None]
