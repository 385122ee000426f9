"""The PostgreSQL backend: JSONB records through a psycopg 3 async connection pool.

Several gateway instances can share one database. `PostgresStorage` opens, migrates and
checks it, and exposes each role as an attribute (`records`, `runs`), all sharing one
`PostgresConnector`. A role of its own lives in its own module (`postgresql_records`,
`postgresql_runs`); adding one is one attribute here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.core.errors import StorageError
from gateway.storage.common.catalog import (
    Catalog,
    create_index_sql,
    index_changes,
    pending_migrations,
)
from gateway.storage.common.query import IndexDef
from gateway.storage.common.sql_files import queries
from gateway.storage.contract import Transaction, TypeSpec
from gateway.storage.postgresql.connector import PostgresConnector
from gateway.storage.postgresql.detection_store import PostgresDetections
from gateway.storage.postgresql.dialect import PostgresDialect
from gateway.storage.postgresql.idempotency_store import PostgresIdempotency, PostgresRates
from gateway.storage.postgresql.job_store import PostgresJobs
from gateway.storage.postgresql.key_store import PostgresKeys
from gateway.storage.postgresql.record_store import PostgresRecords
from gateway.storage.postgresql.run_log import PostgresRunLog
from gateway.storage.postgresql.user_store import PostgresUsers

Q = queries("postgresql")
_DIALECT = PostgresDialect()
PING_SECONDS = 1.0


class PostgresStorage:
    """`Storage` on a PostgreSQL database."""

    system = "postgresql"

    def __init__(self, url: str, min_size: int = 2, max_size: int = 16) -> None:
        self.url = url
        self.migrations_applied: list[str] = []
        self.connector = PostgresConnector(url, Catalog(), min_size, max_size)
        self.records = PostgresRecords(self.connector)
        self.runs = PostgresRunLog(self.connector)
        self.keys = PostgresKeys(self.connector)
        self.detections = PostgresDetections(self.connector)
        self.users = PostgresUsers(self.connector)
        self.idempotency = PostgresIdempotency(self.connector)
        self.rates = PostgresRates(self.connector)
        self.jobs = PostgresJobs(self.connector, url)

    async def open(self, types: Sequence[TypeSpec] = (), *, sync_indexes: bool = True) -> None:
        defs = self.connector.catalog.declare(_DIALECT, types)
        await self.connector.start()
        self.migrations_applied = await self.migrate()
        if sync_indexes:
            await self.connector.guard(self._sync_indexes(defs))
        self.runs.start()

    async def apply_types(self, types: Sequence[TypeSpec]) -> None:
        defs = Catalog.plan(_DIALECT, types)
        await self.connector.guard(self._sync_indexes(defs))
        self.connector.catalog.declare(_DIALECT, types)

    async def close(self) -> None:
        try:
            await self.jobs.stop()
            # answers sent without their requests waiting, given as long as the run log
            await self.idempotency.flush(self.runs.flush_seconds)
            await self.runs.stop()
        finally:
            await self.connector.stop()

    async def migrate(self) -> list[str]:
        return await self.connector.guard(self._migrate())

    def begin(self, seconds: float) -> Transaction:
        return self.connector.begin()

    async def ping(self) -> None:
        """`SELECT 1`, given `PING_SECONDS` for a connection and the answer together (a
        saturated pool would otherwise keep the caller waiting for its 30 s timeout)."""
        try:
            async with asyncio.timeout(PING_SECONDS):
                await self.connector.guard(self._ping())
        except TimeoutError as exc:
            raise StorageError(f"PostgreSQL did not answer within {PING_SECONDS:g} s") from exc

    async def _ping(self) -> None:
        async with self.connector.pool.connection(timeout=PING_SECONDS) as conn:
            await conn.execute(Q["ping"].encode())

    async def _migrate(self) -> list[str]:
        async with self.connector.pool.connection() as conn, conn.transaction():
            await conn.execute(Q["lock_migrations"])  # one migrator at a time, across instances
            await conn.execute(Q["create_migrations_table"])
            applied = await (await conn.execute(Q["applied_migrations"])).fetchall()
            pending = pending_migrations("postgresql", (row[0] for row in applied))
            for migration in pending:
                await conn.execute(migration.sql.encode())
                await conn.execute(Q["record_migration"], (migration.name,))
            return [migration.name for migration in pending]

    async def _sync_indexes(self, defs: list[IndexDef]) -> None:
        async with self.connector.pool.connection() as conn, conn.transaction():
            await conn.execute(Q["lock_migrations"])
            existing = await (await conn.execute(Q["list_indexes"])).fetchall()
            stale, missing = index_changes((row[0] for row in existing), defs)
            for name in stale:
                await conn.execute(Q["drop_index"].format(name=name).encode())
            for index in missing:
                await conn.execute(create_index_sql(Q["create_index"], index).encode())
