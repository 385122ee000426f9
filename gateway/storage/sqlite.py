"""The SQLite backend: the embedded default, one file in WAL mode.

Writes go through the group-committing `Writer` (one thread, one connection). Reads that
the planner answers from one of our indexes run right here on the event loop thread, on a
reader connection of their own: in WAL mode a reader never waits for the writer, and such
a query takes tens of microseconds, less than the ~75 µs of handing it to a thread and
back. Reads that would scan (unindexed constraints, sorts over many rows, counts over a
whole type) go to a reader thread instead, so a slow search cannot stall the loop.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from gateway.clock import utc_now
from gateway.encoding import dumps, iso, parse_iso
from gateway.errors import DuplicateError, RecordNotFoundError, StorageError
from gateway.ids import new_id
from gateway.storage import codec
from gateway.storage.interface import Constraint, Page, SortKey, TypeSpec
from gateway.storage.query import (
    IndexDef,
    compile_order,
    compile_where,
    index_definitions,
    literal,
    seeks_an_index,
)
from gateway.storage.sqlfile import migrations, queries
from gateway.storage.sqlite_dialect import LOWER_FUNCTION, SqliteDialect, fold
from gateway.storage.writer import Writer

_OUR_INDEX = re.compile(r"INDEX gateway_[iu]x_|PRIMARY KEY")
Row = tuple[str, str, str, str, str, str | None]
Q = queries("sqlite")
_DIALECT = SqliteDialect()
PURGE_CHUNK = 1000
QUICK_ROWS = 1000
_ALL = 2**62  # SQLite's "no limit"


def path_from_url(url: str) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix) :] in ("", ":memory:"):
        raise StorageError(f"not a SQLite file URL: {url!r} (use sqlite:///path/to/file.db)")
    return url[len(prefix) :]


class SqliteStorage:
    """`Storage` on one SQLite file."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._path = path_from_url(url)
        self._types: dict[str, TypeSpec] = {}
        self._indexes: dict[str, IndexDef] = {}
        self._writer = Writer(self._connect_writer, Q["upsert_runs"])
        self._reader: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gateway-sqlite-reader")
        self._local = threading.local()
        self._pool_connections: list[sqlite3.Connection] = []
        self._quick: dict[str, bool] = {}

    # --- connections -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, cached_statements=512
        )
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.create_function(LOWER_FUNCTION, 1, fold, deterministic=True)
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: the WAL is synced at every commit, so an acknowledged write survives a
        # power cut; group commit makes that one fsync per batch, not per write.
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _pool_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            self._pool_connections.append(conn)
        return conn

    async def open(self, types: Sequence[TypeSpec] = (), *, sync_indexes: bool = True) -> None:
        self._types = {spec.name: spec for spec in types}
        try:
            await self._writer.start()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {self._path}: {exc}") from exc
        self.migrations_applied = await self.migrate()
        defs = [d for spec in types for d in index_definitions(_DIALECT, spec)]
        self._indexes = {d.name: d for d in defs}
        if sync_indexes:
            await self._write(lambda conn: _sync_indexes(conn, defs))
        self._reader = self._connect()

    async def close(self) -> None:
        await self._writer.stop()
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)
        for conn in [*self._pool_connections, *([self._reader] if self._reader else [])]:
            conn.close()
        self._reader = None

    async def migrate(self) -> list[str]:
        return list(await self._write(_migrate))

    # --- records -------------------------------------------------------------------------

    async def _write(self, fn: Any) -> Any:
        try:
            return await self._writer.submit(fn)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: sqlite3.Error) -> StorageError:
        text = str(exc)
        if isinstance(exc, sqlite3.IntegrityError) and "index '" in text:
            found = self._indexes.get(text.split("index '", 1)[1].rstrip("'"))
            if found is not None:
                return DuplicateError(
                    f"another {found.type_name} already has this {found.field}",
                    found.type_name,
                    found.field,
                )
        return StorageError(f"database error: {text}")

    def _record(self, row: Row) -> dict[str, Any]:
        data = codec.decode_fields(self._types.get(row[1]), json.loads(row[2]))
        return {
            "_id": row[0],
            "_type": row[1],
            "created_at": parse_iso(row[3]),
            "modified_at": parse_iso(row[4]),
            "created_by": row[5],
            **data,
        }

    async def create(
        self, type: str, fields: Mapping[str, Any], created_by: str | None = None
    ) -> dict[str, Any]:
        now = utc_now()
        text = dumps(codec.with_defaults(self._types.get(type), fields))
        stamp = iso(now)
        row: Row = (new_id(now), type, text, stamp, stamp, created_by)
        await self._write(lambda conn: conn.execute(Q["create_record"], row))
        return self._record(row)

    async def get(self, type: str, id: str) -> dict[str, Any] | None:
        assert self._reader is not None, "open() the storage first"
        try:
            row = self._reader.execute(Q["get_record"], (id, type)).fetchone()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        return None if row is None else self._record(row)

    async def update(self, type: str, id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        rows = await self.update_many(type, [id], fields)
        if not rows:
            raise RecordNotFoundError(f"no {type} with id {id}")
        return rows[0]

    async def update_many(
        self, type: str, ids: Sequence[str], fields: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        changes = json.loads(dumps(dict(fields)))
        stamp = iso(utc_now())
        rows = await self._write(lambda conn: _update_rows(conn, type, list(ids), changes, stamp))
        return [self._record(row) for row in rows]

    async def delete(self, type: str, id: str) -> bool:
        return await self.delete_many(type, [id]) == 1

    async def delete_many(self, type: str, ids: Sequence[str]) -> int:
        pairs = [(id, type) for id in ids]
        return int(
            await self._write(lambda conn: conn.executemany(Q["delete_record"], pairs).rowcount)
        )

    async def search(
        self,
        type: str,
        constraints: Sequence[Constraint] = (),
        sort: Sequence[SortKey] = (),
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        spec = self._types.get(type)
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
        try:
            rows, quick_total = self._read_quickly(where.sql, where.params, args, limit, offset)
            if quick_total is not None:
                total = quick_total
            else:
                loop = asyncio.get_running_loop()
                rows, total = await loop.run_in_executor(
                    self._pool, lambda: _read_page(self._pool_connection(), *args)
                )
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        return codec.page([self._record(row) for row in rows], total, offset)

    def _read_quickly(self, where: str, where_params: list[Any], args: tuple[Any, ...],
                      limit: int | None, offset: int) -> tuple[list[Row], int | None]:
        """A search read on the event loop, when it is bounded: a small page through an
        index and at most `QUICK_ROWS` matches to count. Otherwise (None for the total) the
        caller reads on a reader thread: handing a read to a thread costs more than a small
        indexed read, but a large one must not hold up every other request."""
        select, params, count, _ = args
        if limit is None or limit + offset > QUICK_ROWS:
            return [], None
        if not (self._is_quick(select, params) and self._is_quick(count, where_params)):
            return [], None
        capped = Q["count_records_capped"].format(where=where)
        rows, total = _read_page(self._reader_connection(), select, params, capped,
                                 [*where_params, QUICK_ROWS + 1])
        return (rows, total) if total <= QUICK_ROWS else ([], None)

    def _reader_connection(self) -> sqlite3.Connection:
        assert self._reader is not None, "open() the storage first"
        return self._reader

    def _is_quick(self, sql: str, params: Sequence[Any]) -> bool:
        """True when the plan only seeks one of our indexes (no scan, no sort of the rest)."""
        quick = self._quick.get(sql)
        if quick is None:
            plan = self._reader_connection().execute(f"EXPLAIN QUERY PLAN {sql}", params)
            details = [str(row[3]) for row in plan.fetchall()]
            quick = self._quick[sql] = _is_quick_plan(details)
        return quick

    # --- the run log ---------------------------------------------------------------------

    def record_run(self, run: Mapping[str, Any]) -> None:
        try:
            self._writer.record_run(codec.run_row(run))
        except Exception:  # the run log must never fail the request that is being logged
            codec.log_unrecordable(run)

    async def flush_runs(self) -> None:
        await self._writer.flush_runs()

    async def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        params = (workflow, status, iso(since) if since else None, limit)
        rows = await self._read(Q["list_runs"], params)
        return [codec.decode_run(row[0]) for row in rows]

    async def get_run(self, id: str) -> dict[str, Any] | None:
        rows = await self._read(Q["get_run"], (id,))
        return codec.decode_run(rows[0][0]) if rows else None

    async def purge_runs(self, now: datetime, keep: timedelta, keep_failed: timedelta) -> int:
        params = (iso(now - keep), iso(now - keep_failed), PURGE_CHUNK)
        deleted = 0
        while True:
            count = int(await self._write(
                lambda conn: conn.execute(Q["purge_runs"], params).rowcount))
            deleted += count
            if count < PURGE_CHUNK:
                return deleted

    async def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._pool, lambda: self._pool_connection().execute(sql, params).fetchall()
            )
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc


def _is_quick_plan(details: list[str]) -> bool:
    """True when every table access seeks one of our field indexes (or the primary key).

    Sorting the matches is tolerated after an equality seek (few rows match a value we
    index for lookups), not after a range seek, which may match most of the type.
    """
    equality = any(re.search(r"\(type=\? AND .*=\?\)$", d) for d in details)
    for detail in details:
        if detail.startswith("SCAN") or ("TEMP B-TREE" in detail and not equality):
            return False
        if detail.startswith("SEARCH") and not _OUR_INDEX.search(detail):
            return False
    return True


def _read_page(
    conn: sqlite3.Connection, select: str, params: list[Any], count: str, count_params: list[Any]
) -> tuple[list[Row], int]:
    # One read transaction so that the page and the count come from the same snapshot.
    conn.execute("BEGIN")
    try:
        rows = conn.execute(select, params).fetchall()
        total = conn.execute(count, count_params).fetchone()[0]
    finally:
        conn.execute("COMMIT")
    return rows, int(total)


def _update_rows(
    conn: sqlite3.Connection, type: str, ids: list[str], changes: dict[str, Any], stamp: str
) -> list[Row]:
    rows: list[Row] = []
    for id in ids:
        row = conn.execute(Q["get_record"], (id, type)).fetchone()
        if row is None:
            continue
        text = dumps(json.loads(row[2]) | changes)
        conn.execute(Q["update_record"], (text, stamp, id))
        rows.append((row[0], row[1], text, row[3], stamp, row[5]))
    return rows


def _migrate(conn: sqlite3.Connection) -> list[str]:
    conn.execute(Q["create_migrations_table"])
    applied = {row[0] for row in conn.execute(Q["applied_migrations"])}
    names = []
    for migration in migrations("sqlite"):
        if migration.name in applied:
            continue
        for statement in _statements(migration.sql):
            conn.execute(statement)
        conn.execute(Q["record_migration"], (migration.name, iso(utc_now())))
        names.append(migration.name)
    return names


def _statements(script: str) -> list[str]:
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s.strip(" \n;")]


def _sync_indexes(conn: sqlite3.Connection, defs: list[IndexDef]) -> None:
    existing = {row[0] for row in conn.execute(Q["list_indexes"])}
    for stale in existing - {d.name for d in defs}:
        conn.execute(Q["drop_index"].format(name=stale))
    for d in defs:
        if d.name not in existing:
            conn.execute(
                Q["create_index"].format(
                    unique="UNIQUE" if d.unique else "",
                    name=d.name,
                    expression=d.expression,
                    type=literal(d.type_name),
                )
            )
