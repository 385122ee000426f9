"""The run log on SQLite: `RunLog` over a `SqliteConnector`.

Recorded runs ride along with the writer's transactions (see `Writer`); reads go to a
reader thread, and purging deletes in chunks, each its own commit, so that requests' writes
never wait long behind it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from gateway.core.encoding import dumps, iso, parse_iso
from gateway.storage.common import codec, rollup
from gateway.storage.common.run_bounds import SIZE_SAMPLE, TRIM_CHUNK, row_budget, size_per_run
from gateway.storage.common.sql_files import queries
from gateway.storage.contract import Position, RunLogLimits, RunStats
from gateway.storage.sqlite.connector import SqliteConnector

Q = queries("sqlite")
PURGE_CHUNK = 1000
# What a run costs beyond the bytes of its JSON text: its other columns, the row's header
# and its entries in the four indexes (measured: see docs/operations/database.md).
ROW_OVERHEAD = 300


class SqliteRunLog:
    """`RunLog` on one SQLite file."""

    def __init__(self, connector: SqliteConnector) -> None:
        self._db = connector
        self._most = RunLogLimits().max_value_bytes
        self._chars = 0  # of the documents recorded since start

    def configure(self, limits: RunLogLimits) -> None:
        self._db.writer.runs.limit = limits.max_queue  # a shutdown writes them all at once
        self._most = limits.max_value_bytes

    @property
    def dropped(self) -> int:
        return self._db.writer.runs.dropped

    @property
    def queued(self) -> int:
        return len(self._db.writer.runs)

    @property
    def summarised(self) -> int:
        return self._db.writer.runs.summarised

    @property
    def recorded(self) -> int:
        return self._db.writer.runs.added

    @property
    def recorded_chars(self) -> int:
        return self._chars

    def record_run(self, run: Mapping[str, Any]) -> None:
        try:
            row = codec.run_row(run, self._most)
            self._chars += len(row[4])
            self._db.writer.record_run(row)
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
        *,
        source: str | None = None,
        until: datetime | None = None,
        text: str | None = None,
        user: str | None = None,
    ) -> list[dict[str, Any]]:
        params = (workflow, status, iso(since) if since else None, limit, source,
                  iso(until) if until else None, text, user)
        rows = await self._db.fetch(Q["list_runs"], params)
        return [codec.decode_run(row[0]) for row in rows]

    async def page_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        *,
        source: str | None = None,
        until: datetime | None = None,
        before: Position | None = None,
        job: str | None = None,
        user: str | None = None,
    ) -> list[dict[str, Any]]:
        params = (workflow, status, iso(since) if since else None, limit, source,
                  iso(until) if until else None,
                  iso(before[0]) if before else None, before[1] if before else None, job, user)
        rows = await self._db.fetch(Q["page_runs"], params)
        return [codec.decode_run(row[0]) for row in rows]

    async def search_runs(
        self,
        text: str,
        *,
        workflow: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        source: str | None = None,
        before: Position | None = None,
        limit: int = 50,
        scan: int = 10_000,
        user: str | None = None,
    ) -> tuple[list[dict[str, Any]], Position | None]:
        if "\x00" in text:
            return [], None  # the log holds no NUL (see codec.without_nul)
        pattern = "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"
        params = (workflow, status, iso(since) if since else None, limit, source,
                  iso(until) if until else None, pattern,
                  iso(before[0]) if before else None, before[1] if before else None, scan,
                  user)
        end = await self._db.fetch(Q["search_reach"], params)
        bound = tuple(end[0]) if end else (None, None)  # the stretch's end, found first
        rows = await self._db.fetch(Q["search_runs"], (*params, *bound))
        reach = (parse_iso(end[0][0]), str(end[0][1])) if end and len(rows) < limit else None
        return [codec.decode_run(row[0]) for row in rows], reach

    async def count_runs(self, since: datetime, until: datetime,
                         bucket: timedelta) -> list[tuple[int, str, int]]:
        rows = await self._db.fetch(Q["count_runs"], (iso(since), iso(until),
                                                      bucket.total_seconds()))
        return [(int(b), str(status), int(n)) for b, status, n in rows]

    async def run_stats(self, since: datetime) -> list[RunStats]:
        counts = await self._db.fetch(Q["run_counts"], (iso(rollup.minute_time(since)),))
        durations = await self._db.fetch(Q["run_durations"],
                                         (iso(rollup.period_time(since)),))
        return rollup.stats(counts, durations)

    async def last_runs(self, workflows: Sequence[str]) -> dict[str, datetime]:
        rows = await self._db.fetch(Q["last_runs"], (dumps(list(workflows)),))
        return {str(name): parse_iso(at) for name, at in rows if at is not None}

    async def get_run(self, id: str) -> dict[str, Any] | None:
        rows = await self._db.fetch(Q["get_run"], (id,))
        return codec.decode_run(rows[0][0]) if rows else None

    async def purge_runs(self, now: datetime, keep: timedelta, keep_failed: timedelta) -> int:
        before = (iso(now - rollup.KEEP),)

        def purge_rollup(conn: sqlite3.Connection) -> None:
            conn.execute(Q["purge_run_minutes"], before)
            conn.execute(Q["purge_run_durations"], before)

        await self._db.write(purge_rollup)
        return await self._delete_in_chunks(
            Q["purge_runs"], (iso(now - keep), iso(now - keep_failed), PURGE_CHUNK))

    async def run_size(self) -> int:
        return size_per_run(await self._db.fetch(Q["run_size"], (SIZE_SAMPLE,)), ROW_OVERHEAD)

    async def trim_runs(self, max_rows: int | None, max_bytes: int | None) -> int:
        budget = row_budget(max_rows, max_bytes, await self.run_size())
        if budget is None:
            return 0
        # The cutoff walks the log's index as far as the budget: not while the log is
        # surely within it, as it mostly is (a walk each trim cost a served echo 5-15% of
        # its throughput and 4 MiB of page cache under the 1 GiB default).
        if (await self._db.fetch(Q["runs_at_most"], ()))[0][0] <= budget:
            return 0
        rows = await self._db.fetch(Q["trim_cutoff"], (budget,))
        if not rows:
            return 0
        started_at, run_id = rows[0]
        return await self._delete_in_chunks(Q["trim_runs"], (started_at, run_id, TRIM_CHUNK))

    async def _delete_in_chunks(self, sql: str, params: tuple[Any, ...]) -> int:
        chunk = params[-1]
        deleted = 0
        while True:
            count = await self._db.write(lambda conn: int(conn.execute(sql, params).rowcount))
            deleted += count
            if count < chunk:
                return deleted

