"""The SQLite writer: one thread, one connection, group commit.

Every write is a job (a function of the connection) put on a queue. The thread takes the
first waiting job plus every other job already queued, runs them all in ONE transaction with
a SAVEPOINT per job (so a failing job rolls back alone), commits once, and only then
resolves each job's future on its event loop. With `synchronous=FULL` the commit is one
fsync shared by the whole batch: under concurrency the cost of durability is paid once per
batch instead of once per write, and nobody hears "done" before the data is on disk.

The run log rides along: recorded runs wait in a bounded `RunQueue` and each transaction
appends up to `RUNS_PER_COMMIT` of them after the request jobs, so they never delay a request
by more than a few milliseconds and never cost a commit of their own while requests are
flowing. A batch
the database refuses is split until the run it refuses is found; that run is kept as its
summary, or dropped and counted. Runs that cannot be written now (the disk is full, say)
wait in the queue for the next transaction.

A write whose caller stops waiting (its run timed out) before the thread takes it is
withdrawn and never runs; one the thread has already taken holds the caller until its
batch ends, so no write commits after its caller has answered. The thread outlives any
failing batch (a failed ROLLBACK costs it its connection, not its life), and once it has
stopped every write is refused at once with `StorageUnavailableError` instead of waiting
for a thread that is gone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import GatewayError, StorageError, StorageUnavailableError
from gateway.storage import codec
from gateway.storage.backend import RUN_BATCH, RunQueue, batches, write_splitting

RUN_FLUSH_SECONDS = 0.2
# Runs written by one transaction at most (in statements of `RUN_BATCH`). Under load the
# thread wins the interpreter lock back from a busy event loop only every few milliseconds,
# several times per transaction: the more runs each one carries, the more runs a second the
# log keeps up with (a few hundred per transaction fell behind 25,000 requests a second).
RUNS_PER_COMMIT = 4 * RUN_BATCH
log = logging.getLogger(__name__)

Connect = Callable[[], sqlite3.Connection]
RunRow = codec.RunRow
# SQLite's primary result codes that say the file cannot be used right now (busy or locked
# past the busy timeout, out of memory, read-only, an I/O error, corrupt, full, cannot be
# opened, not a database), rather than that the statement was wrong.
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})
STOPPED = "the database is unavailable: its writer has stopped"
UNAVAILABLE = "the database is unavailable; try again later"
_QUEUED, _STARTED, _WITHDRAWN = 0, 1, 2


def unavailable(exc: BaseException) -> bool:
    """True when `exc` says the file cannot be used now, not that a statement was wrong."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in (
        _UNAVAILABLE_CODES)


def failure(exc: Exception) -> GatewayError:
    """What the jobs of a batch that could not commit are answered with."""
    if isinstance(exc, GatewayError):
        return exc
    error: StorageError = (StorageUnavailableError(UNAVAILABLE)
                           if unavailable(exc) else
                           StorageError(f"the database could not commit: {exc}"))
    error.__cause__ = exc
    return error


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any] | None
    loop: asyncio.AbstractEventLoop | None
    state: int = _QUEUED  # changed under `Writer._claims` only


_WAKE = _Job(lambda conn: None, None, None)
_STOP = _Job(lambda conn: None, None, None)


class Writer:
    """Owns the only writing connection to a SQLite file and commits in groups."""

    def __init__(self, connect: Connect, upsert_runs_sql: str) -> None:
        self._connect = connect
        self._upsert_runs = upsert_runs_sql
        self._upsert_by_count: dict[int, str] = {}
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.runs: RunQueue[RunRow] = RunQueue()
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._claims = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._thread = threading.Thread(
            target=self._main, name="gateway-sqlite-writer", daemon=True
        )

    async def start(self) -> None:
        self._thread.start()
        await asyncio.wrap_future(self._ready)

    async def stop(self) -> None:
        """Write everything still queued (runs included), then close the connection."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    @property
    def alive(self) -> bool:
        """Whether the writing thread runs (it ends at `stop()`, or if it crashed)."""
        return self._thread.is_alive()

    def submit(self, fn: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        """`fn` queued; its future resolves once its transaction committed (or failed)."""
        future = self._enqueue(fn).future
        assert future is not None
        return future

    async def call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """`fn` run and committed. Cancelled (a run's deadline passed) before the thread
        takes it, it never runs; cancelled after, the cancellation waits for its batch to
        end (milliseconds): either way nothing commits after the caller has moved on."""
        job = self._enqueue(fn)
        assert job.future is not None
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            if not self._claim(job, _WITHDRAWN):
                await asyncio.wait([job.future])
            raise

    def _enqueue(self, fn: Callable[[sqlite3.Connection], Any]) -> _Job:
        if not self._thread.is_alive():
            raise StorageUnavailableError(STOPPED)
        loop = asyncio.get_running_loop()
        job = _Job(fn, loop.create_future(), loop)
        self._queue.put(job)
        if not self._thread.is_alive():  # it ended while this was queued: nobody will run it
            self._refuse_waiting()
        return job

    def _claim(self, job: _Job, state: int) -> bool:
        """Move a queued job to `state` (started by the thread, or withdrawn by its
        caller); False when the other side got there first."""
        with self._claims:
            if job.state != _QUEUED:
                return False
            job.state = state
            return True

    def _refuse_waiting(self) -> None:
        """Answer every job still queued: the thread that would have run them is gone."""
        refused = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job.future is not None and self._claim(job, _STARTED):
                refused.append(job)
        _resolve(refused, [(False, StorageUnavailableError(STOPPED))] * len(refused))

    def record_run(self, row: RunRow) -> None:
        """Queue one run; thread-safe and never blocks. Runs are written with the next
        commit, or within `RUN_FLUSH_SECONDS`: waking the writer (and syncing the file) for
        each run would cost more than the runs themselves."""
        if self.runs.add(row):
            self._queue.put(_WAKE)

    async def flush_runs(self) -> None:
        await self.submit(lambda conn: self._write_runs(conn, limit=None))

    def _main(self) -> None:
        try:
            self._conn = self._connect()
        except BaseException as exc:  # reported to the awaiting open(), not swallowed
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            self._serve()
        finally:
            self._close()
            self._refuse_waiting()
            if self.runs:
                self.runs.drop(len(self.runs),
                               "they could not be written before the writer stopped")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                conn.close()
        except sqlite3.Error:
            log.exception("could not close the writer's connection")

    def _serve(self) -> None:
        stopping = False
        while not stopping:
            try:
                batch = [self._queue.get(timeout=RUN_FLUSH_SECONDS)]
            except queue.Empty:
                if not self.runs:
                    continue
                batch = [_WAKE]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = any(job is _STOP for job in batch)
            jobs = [job for job in batch if job.future is not None and self._claim(job, _STARTED)]
            self._commit(jobs, stopping)

    def _commit(self, jobs: list[_Job], final: bool) -> None:
        outcomes: list[tuple[bool, Any]]
        written: list[RunRow] = []
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            outcomes = [self._run_job(conn, job) for job in jobs]
            written = self._write_runs(conn, limit=None if final else RUNS_PER_COMMIT)
            conn.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - answered to every job; the thread goes on
            self._roll_back()
            self.runs.put_back(written)  # for the next transaction
            outcomes = [(False, failure(exc))] * len(jobs)
        _resolve(jobs, outcomes)

    def _roll_back(self) -> None:
        """Undo a failed batch. A connection that cannot even roll back (or is broken) is
        closed, which rolls back what it held, and the next batch opens a new one."""
        try:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            return
        except sqlite3.Error:
            log.exception("the SQLite writer could not roll back; it reconnects")
        self._close()

    @staticmethod
    def _run_job(conn: sqlite3.Connection, job: _Job) -> tuple[bool, Any]:
        conn.execute("SAVEPOINT job")
        try:
            result = job.fn(conn)
        except Exception as exc:  # handed to the caller's future
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            return False, exc
        conn.execute("RELEASE job")
        return True, result

    def _upsert_sql(self, count: int) -> str:
        sql = self._upsert_by_count.get(count)
        if sql is None:
            sql = self._upsert_runs.format(values=", ".join(["(?, ?, ?, ?, ?)"] * count))
            if len(self._upsert_by_count) < 64:
                self._upsert_by_count[count] = sql
        return sql

    def _write_runs(self, conn: sqlite3.Connection, limit: int | None) -> list[RunRow]:
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
            self._queue.put(_WAKE)  # more are waiting: come back for them
        return rows

    def _write_part(self, conn: sqlite3.Connection, rows: Sequence[RunRow]) -> None:
        conn.execute("SAVEPOINT runs")
        try:
            for chunk in batches(rows):  # SQLite caps a statement's variables
                for part in _in_fixed_sizes(chunk):
                    conn.execute(self._upsert_sql(len(part)), [v for row in part for v in row])
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


def _resolve(jobs: list[_Job], outcomes: list[tuple[bool, Any]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for job, (ok, value) in zip(jobs, outcomes, strict=True):
        assert job.loop is not None and job.future is not None
        by_loop.setdefault(job.loop, []).append((job.future, ok, value))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)  # one wake-up per loop per batch
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def _settle(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in items:
        if future.done():  # cancelled while queued
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
