"""The run log on SQLite: `RunLog` over a `SqliteConnector`.

Recorded runs ride along with the writer's transactions (see `Writer`); reads go to a
reader thread, and purging deletes in chunks, each its own commit, so that requests' writes
never wait long behind it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from gateway.encoding import iso
from gateway.storage import codec
from gateway.storage.sqlfile import queries
from gateway.storage.sqlite_connector import SqliteConnector

Q = queries("sqlite")
PURGE_CHUNK = 1000


class SqliteRunLog:
    """`RunLog` on one SQLite file."""

    def __init__(self, connector: SqliteConnector) -> None:
        self._db = connector

    def record_run(self, run: Mapping[str, Any]) -> None:
        try:
            self._db.writer.record_run(codec.run_row(run))
        except Exception:  # the run log must never fail the request that is being logged
            codec.log_unrecordable(run)

    async def flush_runs(self) -> None:
        await self._db.writer.flush_runs()

    async def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        params = (workflow, status, iso(since) if since else None, limit)
        rows = await self._db.fetch(Q["list_runs"], params)
        return [codec.decode_run(row[0]) for row in rows]

    async def get_run(self, id: str) -> dict[str, Any] | None:
        rows = await self._db.fetch(Q["get_run"], (id,))
        return codec.decode_run(rows[0][0]) if rows else None

    async def purge_runs(self, now: datetime, keep: timedelta, keep_failed: timedelta) -> int:
        params = (iso(now - keep), iso(now - keep_failed), PURGE_CHUNK)
        deleted = 0
        while True:
            count = await self._db.write(
                lambda conn: int(conn.execute(Q["purge_runs"], params).rowcount))
            deleted += count
            if count < PURGE_CHUNK:
                return deleted
