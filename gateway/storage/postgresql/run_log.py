"""The run log on PostgreSQL: `RunLog` over a `PostgresConnector`.

Recorded runs wait in a bounded `RunQueue` and a background task writes them in batches, so
that logging a run never costs the request a round trip. A batch the database refuses is
split until the run it refuses is found; that run is kept as its summary, or dropped and
counted. While the database cannot be reached, runs wait (up to the queue's limit) and the
task retries with a growing pause; a shutdown spends at most `flush_seconds` writing them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from gateway.core.encoding import dumps
from gateway.core.errors import StorageError
from gateway.storage.common import codec, rollup
from gateway.storage.common.batching import Splitting
from gateway.storage.common.codec import RunRow
from gateway.storage.common.run_bounds import SIZE_SAMPLE, TRIM_CHUNK, row_budget, size_per_run
from gateway.storage.common.run_queue import RUN_BATCH, RunQueue
from gateway.storage.common.sql_files import queries
from gateway.storage.contract import Position, RunLogLimits, RunStats
from gateway.storage.postgresql.connector import PostgresConnector

Q = queries("postgresql")
# What a run costs beyond its stored document: the tuple header, its other columns and its
# entries in the four indexes (measured: see docs/operations/database.md).
ROW_OVERHEAD = 290
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# The most bytes of runs' documents one statement carries (a run's document is JSON text
# already): the batch goes as one JSON array, and PostgreSQL's jsonb holds 256 MiB at most.
BATCH_BYTES = 32 * 1024 * 1024


class PostgresRunLog:
    """`RunLog` on a PostgreSQL database."""

    def __init__(self, connector: PostgresConnector) -> None:
        self._db = connector
        self._queue: RunQueue[RunRow] = RunQueue()
        self._limits = RunLogLimits()
        self._chars = 0  # of the documents recorded since start
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    def configure(self, limits: RunLogLimits) -> None:
        self._limits = limits
        self._queue.limit = limits.max_queue

    @property
    def flush_seconds(self) -> float:
        """How long a shutdown may spend writing what is queued."""
        return self._limits.flush_seconds

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def summarised(self) -> int:
        return self._queue.summarised

    @property
    def recorded(self) -> int:
        return self._queue.added

    @property
    def recorded_chars(self) -> int:
        return self._chars

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_forever(), name="gateway-run-log")

    async def stop(self) -> None:
        """Stop the background writer, then write what is still queued, for at most
        `flush_seconds`; what is left then is dropped and counted."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        try:
            async with asyncio.timeout(self._limits.flush_seconds):
                await self.flush_runs()
        except (StorageError, TimeoutError):
            pass
        if self._queue:
            self._queue.drop(len(self._queue), "the database did not take them at shutdown")
            self._queue.take(None)

    def record_run(self, run: Mapping[str, Any]) -> None:
        try:
            row = codec.run_row(run, self._limits.max_value_bytes)
            self._chars += len(row[4])
            self._queue.add(row)
            self._wake.set()
        except Exception:  # the run log must never fail the request that is being logged
            codec.log_unrecordable(run)

    async def _flush_forever(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush_runs()
                failures = 0
            except StorageError as exc:
                pause = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                self._queue.warn("run log: %d run(s) wait to be written (retrying): %s",
                                 len(self._queue), exc.message)
                await asyncio.sleep(pause)  # a pause before retrying, not once per new run
                self._wake.set()

    async def flush_runs(self) -> None:
        """Write every queued run; raises `StorageError` (keeping the runs queued) when the
        database cannot be reached."""
        async with self._lock:
            while self._queue:
                batch = self._queue.take(RUN_BATCH)
                try:
                    await self._write_splitting(batch)
                except BaseException:  # unreachable, or a cancel at shutdown: keep them
                    self._queue.put_back(batch)  # (an upsert: a retry is harmless)
                    raise

    async def _write_splitting(self, rows: Sequence[RunRow]) -> None:
        """`rows` through `Splitting`, awaited: halves of a refused batch, down to the one run
        refused, which is kept as its summary or dropped. A batch over `BATCH_BYTES` goes in
        halves from the start."""
        parts = Splitting(rows, fits=_fits)
        for part in parts:
            try:
                await self._write(part)
            except Exception as exc:
                if not _refused(exc):
                    raise
                if not parts.split(part):
                    await self._write_summary(part[0], exc)

    async def _write(self, rows: Sequence[RunRow]) -> None:
        """`rows` and what they add to the rollup, in one transaction."""
        minutes, durations = rollup.tally(rows)

        batch = _documents(rows)

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.cursor() as cur:
                await cur.execute(Q["upsert_runs"].encode(), (batch,))
                await cur.execute(Q["add_run_minutes"].encode(), _columns(minutes))
                if durations:
                    await cur.execute(Q["add_run_durations"].encode(), _columns(durations))

        await self._db.alone(work)

    async def _write_summary(self, row: RunRow, exc: Exception) -> None:
        self._queue.summarised += 1
        summary = codec.summary_row(row, exc)
        try:
            await self._write([summary])
        except Exception as again:  # noqa: BLE001 - counted and reported, never raised
            if not _refused(again):
                raise
            self._queue.drop(1, f"the database refused a run: {type(exc).__name__}")
            return
        self._queue.warn("run log: the database refused the details of %d run(s) (%s); "
                         "their summaries were kept", self._queue.summarised, type(exc).__name__)

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
        params = {"workflow": workflow, "status": status, "since": since, "limit": limit,
                  "source": source, "until": until, "text": text, "user": user}
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
        params = {"workflow": workflow, "status": status, "since": since, "limit": limit,
                  "source": source, "until": until,
                  "before_at": before[0] if before else None,
                  "before_id": before[1] if before else None, "job": job, "user": user}
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
        params = {"workflow": workflow, "status": status, "since": since, "limit": limit,
                  "source": source, "until": until, "text": text, "scan": scan, "user": user,
                  "before_at": before[0] if before else None,
                  "before_id": before[1] if before else None}
        end = await self._db.fetch(Q["search_reach"], params)
        rows = await self._db.fetch(Q["search_runs"], {
            **params, "reach_at": end[0][0] if end else None,
            "reach_id": end[0][1] if end else None})
        reach = (end[0][0], str(end[0][1])) if end and len(rows) < limit else None
        return [codec.decode_run(row[0]) for row in rows], reach

    async def count_runs(self, since: datetime, until: datetime,
                         bucket: timedelta) -> list[tuple[int, str, int]]:
        rows = await self._db.fetch(Q["count_runs"], {
            "since": since, "until": until, "seconds": bucket.total_seconds()})
        return [(int(b), str(status), int(n)) for b, status, n in rows]

    async def run_stats(self, since: datetime) -> list[RunStats]:
        counts = await self._db.fetch(Q["run_counts"], {"since": rollup.minute_time(since)})
        durations = await self._db.fetch(Q["run_durations"],
                                         {"since": rollup.period_time(since)})
        return rollup.stats(counts, durations)

    async def last_runs(self, workflows: Sequence[str]) -> dict[str, datetime]:
        rows = await self._db.fetch(Q["last_runs"], {"names": list(workflows)})
        return {str(name): at for name, at in rows if at is not None}

    async def get_run(self, id: str) -> dict[str, Any] | None:
        rows = await self._db.fetch(Q["get_run"], (id,))
        return codec.decode_run(rows[0][0]) if rows else None

    async def purge_runs(self, now: datetime, keep: timedelta, keep_failed: timedelta) -> int:
        await self._db.execute(Q["purge_rollup"], {"before": now - rollup.KEEP})
        return await self._db.execute(Q["purge_runs"], (now - keep, now - keep_failed))

    async def run_size(self) -> int:
        return size_per_run(await self._db.fetch(Q["run_size"], (SIZE_SAMPLE,)), ROW_OVERHEAD)

    async def trim_runs(self, max_rows: int | None, max_bytes: int | None) -> int:
        budget = row_budget(max_rows, max_bytes, await self.run_size())
        if budget is None:
            return 0
        rows = await self._db.fetch(Q["trim_cutoff"], (budget,))
        if not rows:
            return 0
        params = {"at": rows[0][0], "id": rows[0][1], "chunk": TRIM_CHUNK}
        deleted = 0
        while True:
            count = await self._db.execute(Q["trim_runs"], params)
            deleted += count
            if count < TRIM_CHUNK:
                return deleted


def _refused(exc: Exception) -> bool:
    """Whether the database refused these rows (not: it cannot be reached now)."""
    cause = exc.__cause__ if isinstance(exc, StorageError) else exc
    # (a statement beyond what PostgreSQL holds, such as a jsonb over 256 MiB, is an
    # OperationalError for psycopg, but the same rows would be refused every time)
    return isinstance(cause, psycopg.errors.ProgramLimitExceeded) or not isinstance(
        cause, psycopg.OperationalError)


def _fits(rows: Sequence[RunRow]) -> bool:
    """Whether one statement holds these runs' documents."""
    return sum(len(row[4]) for row in rows) <= BATCH_BYTES


def _documents(rows: Sequence[RunRow]) -> str:
    """The runs as `upsert_runs` takes them: one JSON array, each run's document (JSON text
    already) spliced in as it is; a run recorded twice keeps its last (one statement cannot
    update a row twice)."""
    latest = {row[0]: row for row in rows}
    return "[" + ",".join(
        dumps({"id": run_id, "workflow": workflow, "status": status,
               "started_at": started_at})[:-1] + ',"data":' + text + "}"
        for run_id, workflow, status, started_at, text, _ in latest.values()) + "]"


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows (at least one) as columns: the arrays an `unnest` insert takes."""
    return [list(column) for column in zip(*rows, strict=True)]
