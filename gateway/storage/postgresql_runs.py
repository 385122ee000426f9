"""The run log on PostgreSQL: `RunLog` over a `PostgresConnector`.

Recorded runs wait in a `RunQueue` and a background task writes them in batches, so that
logging a run never costs the request a round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from gateway.encoding import parse_iso
from gateway.errors import StorageError
from gateway.storage import codec
from gateway.storage.backend import RunQueue
from gateway.storage.postgresql_connector import PostgresConnector
from gateway.storage.sqlfile import queries

Q = queries("postgresql")
log = logging.getLogger(__name__)
RunRow = tuple[str, str, str, datetime, str]


class PostgresRunLog:
    """`RunLog` on a PostgreSQL database."""

    def __init__(self, connector: PostgresConnector) -> None:
        self._db = connector
        self._queue: RunQueue[RunRow] = RunQueue()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_forever(), name="gateway-run-log")

    async def stop(self) -> None:
        """Stop the background writer, then write what is still queued."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await self.flush_runs()

    def record_run(self, run: Mapping[str, Any]) -> None:
        try:
            id, workflow, status, started, text = codec.run_row(run)
            self._queue.add((id, workflow, status, parse_iso(started), text))
            self._wake.set()
        except Exception:  # the run log must never fail the request that is being logged
            codec.log_unrecordable(run)

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush_runs()
            except StorageError:
                log.exception("could not write to the run log; will retry with the next run")

    async def flush_runs(self) -> None:
        async with self._lock:
            while self._queue:
                batch = self._queue.take()
                try:
                    await self._db.execute_many(Q["upsert_runs"], batch)
                except BaseException:  # a failure, or a cancel at shutdown: keep them for a retry
                    self._queue.put_back(batch)  # (an upsert: a retry is harmless)
                    raise

    async def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        params = {"workflow": workflow, "status": status, "since": since, "limit": limit}
        rows = await self._db.fetch(Q["list_runs"], params)
        return [codec.decode_run(row[0]) for row in rows]

    async def get_run(self, id: str) -> dict[str, Any] | None:
        rows = await self._db.fetch(Q["get_run"], (id,))
        return codec.decode_run(rows[0][0]) if rows else None

    async def purge_runs(self, now: datetime, keep: timedelta, keep_failed: timedelta) -> int:
        return await self._db.execute(Q["purge_runs"], (now - keep, now - keep_failed))
