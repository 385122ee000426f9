"""The PostgreSQL backend: JSONB records through a psycopg 3 async connection pool.

Several gateway instances can share one database. Connections run in autocommit so a
single-statement write is one round trip; PostgreSQL's own commit path groups concurrent
commits. The run log is buffered and written in batches by a background task.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from gateway.clock import utc_now
from gateway.encoding import dumps, parse_iso
from gateway.errors import DuplicateError, RecordNotFoundError, StorageError
from gateway.ids import new_id
from gateway.storage import codec
from gateway.storage.interface import Constraint, Page, SortKey, TypeSpec
from gateway.storage.postgresql_dialect import PostgresDialect
from gateway.storage.query import IndexDef, compile_order, compile_where, index_definitions, literal
from gateway.storage.sqlfile import migrations, queries

Q = queries("postgresql")
_DIALECT = PostgresDialect()
RUN_BATCH = 500
log = logging.getLogger(__name__)


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=dumps)


class PostgresStorage:
    """`Storage` on a PostgreSQL database."""

    def __init__(self, url: str, min_size: int = 2, max_size: int = 16) -> None:
        self.url = url
        self._pool = AsyncConnectionPool(
            url, min_size=min_size, max_size=max_size, open=False, kwargs={"autocommit": True}
        )
        self._types: dict[str, TypeSpec] = {}
        self._indexes: dict[str, IndexDef] = {}
        self._runs: collections.deque[tuple[Any, ...]] = collections.deque()
        self._runs_wake = asyncio.Event()
        self._runs_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    async def open(self, types: Sequence[TypeSpec] = (), *, sync_indexes: bool = True) -> None:
        self._types = {spec.name: spec for spec in types}
        try:
            await self._pool.open(wait=True, timeout=10)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc
        self.migrations_applied = await self.migrate()
        defs = [d for spec in types for d in index_definitions(_DIALECT, spec)]
        self._indexes = {d.name: d for d in defs}
        if sync_indexes:
            await self._guard(self._sync_indexes(defs))
        self._flusher = asyncio.create_task(self._flush_forever(), name="gateway-run-log")

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        try:
            await self.flush_runs()
        finally:
            await self._pool.close()

    async def migrate(self) -> list[str]:
        return list(await self._guard(self._migrate()))

    async def _migrate(self) -> list[str]:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(Q["lock_migrations"])  # one migrator at a time, across instances
            await conn.execute(Q["create_migrations_table"])
            applied = {
                row[0] for row in await (await conn.execute(Q["applied_migrations"])).fetchall()
            }
            names = []
            for migration in migrations("postgresql"):
                if migration.name not in applied:
                    await conn.execute(migration.sql.encode())
                    await conn.execute(Q["record_migration"], (migration.name,))
                    names.append(migration.name)
            return names

    async def _sync_indexes(self, defs: list[IndexDef]) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(Q["lock_migrations"])
            existing = {row[0] for row in await (await conn.execute(Q["list_indexes"])).fetchall()}
            for stale in existing - {d.name for d in defs}:
                await conn.execute(Q["drop_index"].format(name=stale).encode())
            for d in defs:
                if d.name not in existing:
                    sql = Q["create_index"].format(
                        unique="UNIQUE" if d.unique else "",
                        name=d.name,
                        expression=d.expression,
                        type=literal(d.type_name),
                    )
                    await conn.execute(sql.encode())

    # --- errors --------------------------------------------------------------------------

    async def _guard(self, work: Any) -> Any:
        try:
            return await work
        except psycopg.Error as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: psycopg.Error) -> StorageError:
        if isinstance(exc, psycopg.errors.UniqueViolation):
            found = self._indexes.get(exc.diag.constraint_name or "")
            if found is not None:
                return DuplicateError(
                    f"another {found.type_name} already has this {found.field}",
                    found.type_name,
                    found.field,
                )
        return StorageError(f"database error: {exc}")

    # --- records -------------------------------------------------------------------------

    def _record(self, row: Sequence[Any]) -> dict[str, Any]:
        data = codec.decode_fields(self._types.get(row[1]), dict(row[2]))
        return {
            "_id": row[0],
            "_type": row[1],
            "created_at": row[3].astimezone(UTC),
            "modified_at": row[4].astimezone(UTC),
            "created_by": row[5],
            **data,
        }

    async def _fetch(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        async def work() -> list[tuple[Any, ...]]:
            async with self._pool.connection() as conn:
                return await (await conn.execute(sql.encode(), params)).fetchall()

        return list(await self._guard(work()))

    async def _execute(self, sql: str, params: Sequence[Any]) -> int:
        async def work() -> int:
            async with self._pool.connection() as conn:
                return (await conn.execute(sql.encode(), params)).rowcount

        return int(await self._guard(work()))

    async def create(
        self, type: str, fields: Mapping[str, Any], created_by: str | None = None
    ) -> dict[str, Any]:
        now = utc_now()
        data = codec.with_defaults(self._types.get(type), fields)
        # Round-trip through JSON so the caller gets exactly what a later get() returns.
        stored = codec.json_roundtrip(data)
        id = new_id(now)
        await self._execute(Q["create_record"], (id, type, _jsonb(stored), now, now, created_by))
        return self._record((id, type, stored, now, now, created_by))

    async def get(self, type: str, id: str) -> dict[str, Any] | None:
        rows = await self._fetch(Q["get_record"], (id, type))
        return self._record(rows[0]) if rows else None

    async def update(self, type: str, id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        params = (_jsonb(dict(fields)), utc_now(), id, type)
        rows = await self._fetch(Q["update_record"], params)
        if not rows:
            raise RecordNotFoundError(f"no {type} with id {id}")
        return self._record(rows[0])

    async def update_many(
        self, type: str, ids: Sequence[str], fields: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        params = (_jsonb(dict(fields)), utc_now(), list(ids), type)
        rows = await self._fetch(Q["update_records"], params)
        order = {id: n for n, id in enumerate(ids)}
        return [self._record(row) for row in sorted(rows, key=lambda row: order[row[0]])]

    async def delete(self, type: str, id: str) -> bool:
        return await self._execute(Q["delete_record"], (id, type)) == 1

    async def delete_many(self, type: str, ids: Sequence[str]) -> int:
        return await self._execute(Q["delete_records"], (list(ids), type))

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
        order = compile_order(_DIALECT, spec, sort)
        offset = codec.decode_cursor(cursor)
        sql = Q["search_records"].format(where=where.sql, order=order)
        rows = await self._fetch(sql, [*where.params, *where.params, limit, offset])
        if rows:
            total = int(rows[0][0])
        else:
            count = await self._fetch(Q["count_records"].format(where=where.sql), where.params)
            total = int(count[0][0])
        return codec.page([self._record(row[1:]) for row in rows], total, offset)

    # --- the run log ---------------------------------------------------------------------

    def record_run(self, run: Mapping[str, Any]) -> None:
        try:
            id, workflow, status, started, text = codec.run_row(run)
            self._runs.append((id, workflow, status, parse_iso(started), text))
            self._runs_wake.set()
        except Exception:  # the run log must never fail the request that is being logged
            codec.log_unrecordable(run)

    async def _flush_forever(self) -> None:
        while True:
            await self._runs_wake.wait()
            self._runs_wake.clear()
            try:
                await self.flush_runs()
            except StorageError:
                log.exception("could not write to the run log; will retry with the next run")

    async def flush_runs(self) -> None:
        async with self._runs_lock:
            while self._runs:
                batch = [self._runs.popleft() for _ in range(min(RUN_BATCH, len(self._runs)))]
                try:
                    await self._guard(self._write_runs(batch))
                except BaseException:  # a failure, or a cancel at shutdown: keep them for a retry
                    self._runs.extendleft(reversed(batch))  # (an upsert: a retry is harmless)
                    raise

    async def _write_runs(self, batch: list[tuple[Any, ...]]) -> None:
        async with self._pool.connection() as conn:
            async with conn.cursor() as cur:
                await cur.executemany(Q["upsert_runs"].encode(), batch)

    async def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        params = {"workflow": workflow, "status": status, "since": since, "limit": limit}
        rows = await self._fetch(Q["list_runs"], params)
        return [codec.decode_run(row[0]) for row in rows]

    async def get_run(self, id: str) -> dict[str, Any] | None:
        rows = await self._fetch(Q["get_run"], (id,))
        return codec.decode_run(rows[0][0]) if rows else None

    async def purge_runs(self, now: datetime, keep: timedelta, keep_failed: timedelta) -> int:
        return await self._execute(Q["purge_runs"], (now - keep, now - keep_failed))
