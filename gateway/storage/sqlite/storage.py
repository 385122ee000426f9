"""The SQLite backend: the embedded default, one file in WAL mode.

`SqliteStorage` opens, migrates and checks the file, and exposes each role as an
attribute (`records`, `runs`), all sharing one `SqliteConnector`. A role of its own lives
in its own module (`sqlite_records`, `sqlite_runs`); adding one is one attribute here.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence

from gateway.core.clock import utc_now
from gateway.core.encoding import iso
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
from gateway.storage.sqlite.connector import SqliteConnector
from gateway.storage.sqlite.detection_store import SqliteDetections
from gateway.storage.sqlite.dialect import SqliteDialect
from gateway.storage.sqlite.idempotency_store import SqliteIdempotency, SqliteRates
from gateway.storage.sqlite.job_store import SqliteJobs
from gateway.storage.sqlite.key_store import SqliteKeys
from gateway.storage.sqlite.record_store import SqliteRecords
from gateway.storage.sqlite.run_log import SqliteRunLog
from gateway.storage.sqlite.user_store import SqliteUsers

Q = queries("sqlite")
_DIALECT = SqliteDialect()


class SqliteStorage:
    """`Storage` on one SQLite file."""

    system = "sqlite"

    def __init__(self, url: str) -> None:
        self.url = url
        self.migrations_applied: list[str] = []
        self.connector = SqliteConnector(url, Catalog())
        self.records = SqliteRecords(self.connector)
        self.runs = SqliteRunLog(self.connector)
        self.keys = SqliteKeys(self.connector)
        self.detections = SqliteDetections(self.connector)
        self.users = SqliteUsers(self.connector)
        self.idempotency = SqliteIdempotency(self.connector)
        self.rates = SqliteRates(self.connector)
        self.jobs = SqliteJobs(self.connector)

    async def open(self, types: Sequence[TypeSpec] = (), *, sync_indexes: bool = True) -> None:
        defs = self.connector.catalog.declare(_DIALECT, types)
        await self.connector.start()
        self.migrations_applied = await self.migrate()
        if sync_indexes:
            await self.connector.write(lambda conn: _sync_indexes(conn, defs))
        self.connector.open_reader()
        await self.idempotency.start()

    async def apply_types(self, types: Sequence[TypeSpec]) -> None:
        defs = Catalog.plan(_DIALECT, types)
        await self.connector.write(lambda conn: _sync_indexes(conn, defs))
        self.connector.catalog.declare(_DIALECT, types)

    async def close(self) -> None:
        if self.connector.writer.alive:
            await self.idempotency.flush()  # keys decided in memory, not yet handed over
        await self.connector.stop()

    async def migrate(self) -> list[str]:
        return await self.connector.write(_migrate)

    def begin(self, seconds: float) -> Transaction:
        return self.connector.begin(seconds)

    async def ping(self) -> None:
        """A read on the event loop's reader, then the two things a write needs: a writer
        thread that runs, and a file that may be written. Answers at once either way."""
        self.connector.read_here(lambda conn: conn.execute(Q["ping"]).fetchone())
        if not self.connector.writer.alive:
            raise StorageError(f"the writer of {self.connector.path} has stopped")
        if not os.access(self.connector.path, os.W_OK):
            raise StorageError(f"{self.connector.path} cannot be written")


def _migrate(conn: sqlite3.Connection) -> list[str]:
    conn.execute(Q["create_migrations_table"])
    applied = conn.execute(Q["applied_migrations"]).fetchall()
    pending = pending_migrations("sqlite", (row[0] for row in applied))
    for migration in pending:
        for statement in _statements(migration.sql):
            conn.execute(statement)
        conn.execute(Q["record_migration"], (migration.name, iso(utc_now())))
    return [migration.name for migration in pending]


def _statements(script: str) -> list[str]:
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s.strip(" \n;")]


def _sync_indexes(conn: sqlite3.Connection, defs: list[IndexDef]) -> None:
    stale, missing = index_changes((row[0] for row in conn.execute(Q["list_indexes"])), defs)
    for name in stale:
        conn.execute(Q["drop_index"].format(name=name))
    for index in missing:
        conn.execute(create_index_sql(Q["create_index"], index))
