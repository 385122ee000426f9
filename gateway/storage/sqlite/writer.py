"""The SQLite writer: one thread, one connection, group commit.

Every write is a job (a function of the connection) handed to the thread (a `Handoff`). The
thread takes the first waiting job plus every other job already queued, runs them all in ONE
transaction with a SAVEPOINT per job (so a failing job rolls back alone), commits once, and
only then resolves each job's future on its event loop (`answer_from_thread`). With
`synchronous=FULL` the commit is one fsync shared by the whole batch: under concurrency the
cost of durability is paid once per batch instead of once per write, and nobody hears "done"
before the data is on disk.

The run log rides along: recorded runs wait in a bounded `RunQueue` and each transaction
appends up to `RUNS_PER_COMMIT` of them after the request jobs, so they never delay a request
by more than a few milliseconds and never cost a commit of their own while requests are
flowing. A batch the database refuses is split until the run it refuses is found; that run
is kept as its summary, or dropped and counted. Runs that cannot be written now (the disk is
full, say) wait in the queue for the next transaction.

A run's writes are one transaction (see `storage.common.transaction`): the first write of a run
opens a SAVEPOINT inside the batch's transaction and the thread then serves that run alone,
answering each of its writes at once, until the run ends: its end releases the savepoint
into the batch (answered once the batch commits) or rolls it back. Writes of others that
arrive meanwhile wait their turn in the same batch. A run that holds the thread past its
time is rolled back, and its later writes refused. A batch takes new work for
`BATCH_SECONDS` at most, so that a stream of runs cannot keep its commit waiting.

A write whose caller stops waiting (its run timed out) before the thread takes it is
withdrawn and never runs (a run's commit becomes its rollback); one the thread has already
taken holds the caller until its batch ends, and a commit that landed is answered as done:
no caller says it failed while its writes are kept. The thread outlives any
failing batch (a failed ROLLBACK costs it its connection, not its life), and once it has
stopped every write is refused at once with `StorageUnavailableError` instead of waiting
for a thread that is gone.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import StorageError, StorageUnavailableError
from gateway.storage.common.batching import Handoff, Outcome, answer_from_thread
from gateway.storage.common.run_queue import RUN_BATCH, RunQueue
from gateway.storage.sqlite.error_mapping import HELD_TOO_LONG, STOPPED, failure
from gateway.storage.sqlite.run_writer import RunRow, RunWriter

RUN_FLUSH_SECONDS = 0.2
# Runs written by one transaction at most (in statements of `RUN_BATCH`). Under load the
# thread wins the interpreter lock back from a busy event loop only every few milliseconds,
# several times per transaction: the more runs each one carries, the more runs a second the
# log keeps up with (a few hundred per transaction fell behind 25,000 requests a second).
RUNS_PER_COMMIT = 4 * RUN_BATCH
# How long one batch takes in new work before it commits; what arrives later goes to the next.
BATCH_SECONDS = 0.01
log = logging.getLogger(__name__)

Connect = Callable[[], sqlite3.Connection]
_QUEUED, _STARTED, _WITHDRAWN = 0, 1, 2
_WORK, _COMMIT, _ROLLBACK = 0, 1, 2


class Held:
    """What the thread knows of one run's transaction (a unit): whether its savepoint is
    open, and whether it ended. Changed by the thread only."""

    __slots__ = ("seconds", "opened", "done", "refusal")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds  # the longest the run may hold the thread
        self.opened = False
        self.done = False
        self.refusal: str | None = None  # why its later work is refused


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any] | None
    state: int = _QUEUED  # changed under `Writer._claims` only
    held: Held | None = None  # the run whose transaction it is part of
    kind: int = _WORK  # or the end of that run: _COMMIT, _ROLLBACK


_WAKE = _Job(lambda conn: None, None)
_STOP = _Job(lambda conn: None, None)


class Writer:
    """Owns the only writing connection to a SQLite file and commits in groups."""

    def __init__(self, connect: Connect, upsert_runs_sql: str) -> None:
        self._connect = connect
        self._queue: Handoff[_Job] = Handoff()
        self._carried: collections.deque[_Job] = collections.deque()  # for the next batch
        self._stopping = False
        self.log = RunWriter(upsert_runs_sql, lambda: self._queue.put(_WAKE))
        self.runs: RunQueue[RunRow] = self.log.runs
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._claims = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._serving = False  # from its connection made until its loop ends
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
        """Whether the writing thread runs (it ends at `stop()`, or if it crashed): a flag
        the thread clears as it ends, cheaper than asking the thread on every claim."""
        return self._serving

    def submit(self, fn: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        """`fn` queued; its future resolves once its transaction committed (or failed)."""
        future = self._enqueue(fn).future
        assert future is not None
        return future

    async def call(self, fn: Callable[[sqlite3.Connection], Any], held: Held | None = None) -> Any:
        """`fn` run and committed (withdrawn or seen through if cancelled: see the module).
        Part of a run's transaction (`held`), it is answered as soon as it ran; the run's
        end decides whether it commits."""
        job = self._enqueue(fn, held)
        assert job.future is not None
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            if not self._claim(job, _WITHDRAWN):
                await asyncio.wait([job.future])
                if held is None:  # its own commit: answered as it went (a 503, say)
                    return job.future.result()
            raise

    async def end(self, held: Held, commit: bool) -> None:
        """End a run's transaction: kept (answered once its batch committed) or rolled back;
        seen through if the caller is cancelled (see the module), never left half-done."""
        job = self._enqueue(_nothing, held, _COMMIT if commit else _ROLLBACK)
        assert job.future is not None
        try:
            await asyncio.shield(job.future)
        except asyncio.CancelledError:
            withdrawn = commit and self._claim(job, _QUEUED, _ROLLBACK)
            await asyncio.wait([job.future])
            if withdrawn or not commit:
                raise
            job.future.result()  # it committed: answered so (or its own reason, a 503 say)

    def _enqueue(self, fn: Callable[[sqlite3.Connection], Any], held: Held | None = None,
                 kind: int = _WORK) -> _Job:
        if not self._thread.is_alive():
            raise StorageUnavailableError(STOPPED)
        job = _Job(fn, asyncio.get_running_loop().create_future(), held=held, kind=kind)
        self._queue.put(job)
        if not self._thread.is_alive():  # it ended while this was queued: nobody will run it
            self._refuse_waiting()
        return job

    def _claim(self, job: _Job, state: int, kind: int | None = None) -> bool:
        """Move a queued job to `state` (taken by the thread, withdrawn by its caller) or a
        run's end to `kind` (a commit made a rollback); False if the other side came first."""
        with self._claims:
            if job.state != _QUEUED:
                return False
            job.state, job.kind = state, job.kind if kind is None else kind
            return True

    def _refuse_waiting(self) -> None:
        """Answer every job still queued: the thread that would have run them is gone."""
        refused = [job for job in self._queue.take()
                   if job.future is not None and self._claim(job, _STARTED)]
        _resolve(refused, [(False, StorageUnavailableError(STOPPED))] * len(refused))

    def record_run(self, row: RunRow) -> None:
        """Queue one run; thread-safe and never blocks. Runs are written with the next
        commit, or within `RUN_FLUSH_SECONDS`: waking the writer (and syncing the file) for
        each run would cost more than the runs themselves."""
        if self.runs.add(row) and len(self.runs) == RUN_BATCH:  # a batch is complete
            self._queue.put(_WAKE)

    async def flush_runs(self) -> None:
        await self.submit(lambda conn: self.log.write(conn, limit=None))

    def _main(self) -> None:
        try:
            self._conn = self._connect()
        except BaseException as exc:  # reported to the awaiting open(), not swallowed
            self._ready.set_exception(exc)
            return
        self._serving = True
        self._ready.set_result(None)
        try:
            self._serve()
        finally:
            self._serving = False
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
        while not (self._stopping and not self._carried):
            jobs = list(self._carried)  # taken already, by the last transaction
            self._carried.clear()
            batch = self._queue.take(0 if jobs else RUN_FLUSH_SECONDS)
            if not (jobs or batch or self.runs):
                continue
            jobs.extend(job for job in batch if self._take(job))
            self._commit(jobs)

    def _take(self, job: _Job) -> bool:
        """Whether the thread runs `job` (not a signal, not withdrawn); notes a stop."""
        if job is _STOP:
            self._stopping = True
        return job.future is not None and self._claim(job, _STARTED)

    def _commit(self, jobs: list[_Job]) -> None:
        """One transaction: `jobs` (runs held in turn), then queued runs of the log."""
        waiting: list[_Job] = []  # answered once the transaction has committed
        outcomes: list[Outcome] = []
        written: list[RunRow] = []
        held: list[Held] = []
        todo = collections.deque(jobs)
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            until = time.monotonic() + BATCH_SECONDS
            while todo:
                job = todo.popleft()
                if job.held is None:
                    waiting.append(job)
                    outcomes.append(self._run_job(conn, job))
                    continue
                if not job.held.opened and not job.held.done:
                    held.append(job.held)
                end = self._serve_run(conn, job, todo)
                if end is not None:
                    waiting.append(end)
                    outcomes.append((True, None))
                if time.monotonic() > until:  # the rest goes to the next transaction
                    self._carried.extend(todo)
                    todo.clear()
            written = self.log.write(conn, limit=None if self._stopping else RUNS_PER_COMMIT)
            conn.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - answered to every job; the thread goes on
            self._roll_back()
            self.runs.put_back(written)  # for the next transaction
            error = failure(exc)
            for run in held:  # what a run wrote is gone with the batch: its end fails
                run.done, run.refusal = True, error.message
            outcomes = [(False, error)] * len(waiting)
            _resolve(list(todo), [(False, error)] * len(todo))
        _resolve(waiting, outcomes)

    def _serve_run(self, conn: sqlite3.Connection, job: _Job,
                   others: collections.deque[_Job]) -> _Job | None:
        """`job` of a run, then the rest of that run until its end, answering each at once;
        what others queue meanwhile joins `others`. The end to answer at commit, if the
        run is kept."""
        run = job.held
        assert run is not None
        if run.done:  # rolled back already (held too long, or its batch failed)
            kept = job.kind == _ROLLBACK
            _resolve([job], [(True, None) if kept else (False, StorageError(
                run.refusal or HELD_TOO_LONG))])
            return None
        if not run.opened:
            if job.kind != _WORK:  # it ends before any of its work ran (withdrawn)
                run.done = True
                _resolve([job], [(True, None)])
                return None
            conn.execute("SAVEPOINT run")
            run.opened = True
        deadline = time.monotonic() + run.seconds
        next_job: _Job | None = job
        while True:
            if next_job is not None and next_job.held is run:
                if next_job.kind == _COMMIT:
                    conn.execute("RELEASE run")
                    run.done = True
                    return next_job
                if next_job.kind == _ROLLBACK:
                    self._undo_run(conn, run, None)
                    _resolve([next_job], [(True, None)])
                    return None
                _resolve([next_job], [self._run_job(conn, next_job)])
            elif next_job is not None:
                others.append(next_job)
            left = deadline - time.monotonic()
            if left <= 0:
                self._undo_run(conn, run, HELD_TOO_LONG)
                log.warning("a run held the SQLite writer for %.1f s; it was rolled back",
                            run.seconds)
                return None
            candidate = self._queue.next(left)
            next_job = candidate if candidate is not None and self._take(candidate) else None

    @staticmethod
    def _undo_run(conn: sqlite3.Connection, run: Held, refusal: str | None) -> None:
        conn.execute("ROLLBACK TO run")
        conn.execute("RELEASE run")
        run.done, run.refusal = True, refusal

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
    def _run_job(conn: sqlite3.Connection, job: _Job) -> Outcome:
        conn.execute("SAVEPOINT job")
        try:
            result = job.fn(conn)
        except Exception as exc:  # handed to the caller's future
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            return False, exc
        conn.execute("RELEASE job")
        return True, result

def _nothing(conn: sqlite3.Connection) -> None:
    return None


def _resolve(jobs: list[_Job], outcomes: list[Outcome]) -> None:
    answer_from_thread([job.future for job in jobs], outcomes)  # one wake-up per loop
