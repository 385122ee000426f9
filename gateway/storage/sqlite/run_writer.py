"""The run log's part of each SQLite transaction: queued runs written in statements of a
few fixed sizes, with what they add to the rollup (see `rollup`); a batch the database
refuses split until the run it refuses is found, that run kept as its summary (or dropped
and counted). Used by the `Writer`, in its thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from gateway.storage.common import codec, rollup
from gateway.storage.common.batching import batches, write_splitting
from gateway.storage.common.run_queue import RUN_BATCH, RunQueue
from gateway.storage.common.sql_files import queries

RunRow = codec.RunRow
Q = queries("sqlite")


class RunWriter:
    """The queue of runs waiting to be written, and how they are written."""

    def __init__(self, upsert_runs_sql: str, wake: Callable[[], None]) -> None:
        self.runs: RunQueue[RunRow] = RunQueue()
        self._upsert_runs = upsert_runs_sql
        self._upsert_by_count: dict[int, str] = {}
        self._wake = wake  # asks the writer for another transaction

    def _upsert_sql(self, count: int) -> str:
        sql = self._upsert_by_count.get(count)
        if sql is None:
            sql = self._upsert_runs.format(values=", ".join(["(?, ?, ?, ?, ?)"] * count))
            if len(self._upsert_by_count) < 64:
                self._upsert_by_count[count] = sql
        return sql

    def write(self, conn: sqlite3.Connection, limit: int | None) -> list[RunRow]:
        """Up to `limit` queued runs written in the open transaction; returns them."""
        rows = self.runs.take(limit)
        if not rows:
            return []
        try:
            refused = write_splitting(rows, lambda part: self._write_part(conn, part), _refused)
        except sqlite3.Error as exc:  # the file cannot be written now: keep them for later
            self.runs.put_back(rows)
            self.runs.warn("run log: %d run(s) wait to be written: %s", len(self.runs), exc)
            return []
        for row, error in refused:
            self._write_summary(conn, row, error)
        if self.runs:
            self._wake()  # more are waiting: come back for them
        return rows

    def _write_part(self, conn: sqlite3.Connection, rows: Sequence[RunRow]) -> None:
        conn.execute("SAVEPOINT runs")
        try:
            for chunk in batches(rows, RUN_BATCH):  # SQLite caps a statement's variables
                for part in _in_fixed_sizes(chunk):
                    conn.execute(self._upsert_sql(len(part)),
                                 [v for row in part for v in row[:5]])
            minutes, durations = rollup.tally(rows)
            conn.executemany(Q["add_run_minutes"], minutes)
            conn.executemany(Q["add_run_durations"], durations)
        except BaseException:
            conn.execute("ROLLBACK TO runs")
            raise
        finally:
            conn.execute("RELEASE runs")

    def _write_summary(self, conn: sqlite3.Connection, row: RunRow, exc: Exception) -> None:
        """A run the database refused, kept as its summary (or dropped, if that fails too)."""
        self.runs.summarised += 1
        try:
            self._write_part(conn, [codec.summary_row(row, exc)])
        except Exception:  # noqa: BLE001 - counted and reported, never raised into a commit
            self.runs.drop(1, f"the database refused a run: {type(exc).__name__}")
            return
        self.runs.warn("run log: the database refused the details of %d run(s) (%s); "
                       "their summaries were kept", self.runs.summarised, type(exc).__name__)


def _refused(exc: Exception) -> bool:
    """Whether the database refused these rows (not: it cannot be written at all now)."""
    return not isinstance(exc, sqlite3.OperationalError)


# Runs are written in statements of these sizes only: each size is one SQL text, which the
# connection prepares once and keeps. A statement per batch length (1 to 500) would keep up
# to 128 large prepared statements, tens of MiB, for no gain.
STATEMENT_SIZES = (256, 64, 16, 4, 1)


def _in_fixed_sizes(rows: Sequence[RunRow]) -> list[Sequence[RunRow]]:
    parts = []
    start = 0
    for size in STATEMENT_SIZES:
        while len(rows) - start >= size:
            parts.append(rows[start:start + size])
            start += size
    return parts
