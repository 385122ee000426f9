"""Jobs on SQLite: `JobStore` over a `SqliteConnector`.

Every write goes through the writer thread, so a claim is one `UPDATE … RETURNING` in the
writer's transaction: no two workers of a file can take the same job. Enqueued jobs wake
this process's workers at once; other processes on the same file see them at their next
poll.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.core.encoding import dumps, iso, loads, parse_iso
from gateway.storage.common import transaction
from gateway.storage.common.job_rows import (
    Wake,
    call_wait,
    check_pending,
    epoch_ms,
    first_of,
    job_from_row,
    started_ms,
    turns,
)
from gateway.storage.common.sql_files import queries
from gateway.storage.contract import Checkpoint, Job, JobEnd, PendingBound, Position
from gateway.storage.contract.job_store import CallKeys, KeyUse, lease_lost, series_of
from gateway.storage.sqlite.connector import SqliteConnector

Q = queries("sqlite")
log = logging.getLogger("gateway.storage")
# Ids per statement of an `IN (…)` list: well under SQLite's limit on variables.
CHUNK = 500
KEYED_WINDOW = 500  # due keyed jobs a keyed claim ranks (see `claim_keyed_jobs`)


def _when(value: Any) -> datetime | None:
    return parse_iso(value) if value else None


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


def _row(job: Job) -> tuple[Any, ...]:
    created = job.created_at or job.due_at
    return (job.id, job.workflow, job.source, iso(job.due_at), job.unique_key, job.subject,
            iso(created), dumps(dict(job.data)), series_of(job), job.flow_key, job.flow_limit,
            job.throttle_key, job.throttle_limit, job.throttle_ms, job.debounce_key,
            job.single_key)


def _insert(conn: sqlite3.Connection,
            jobs: Sequence[Job]) -> tuple[list[str], collections.Counter[str]]:
    """`jobs` written (those `enqueue_job` takes) and counted as pending: their ids, and
    how many of each workflow. Encoded here, in the writer's thread, not on the event loop.
    A debounced job written over the one waiting with its key is neither."""
    written, added = [], collections.Counter[str]()
    for job in jobs:
        if job.debounce_key is None:
            new = conn.execute(Q["enqueue_job"], _row(job)).rowcount
        else:
            new = conn.execute(Q["enqueue_debounced"], _row(job)).fetchone()[0] == job.id
        if new:
            written.append(job.id)
            added[job.workflow] += 1
    conn.executemany(Q["add_pending"], added.items())
    return written, added


def _defer_throttled(conn: sqlite3.Connection, now: str, now_ms: int) -> None:
    """The due jobs of throttle keys left full by a claim made due at their turns
    (`turns`), in the claim's transaction."""
    full = conn.execute(Q["full_throttles"], (now, now_ms, KEYED_WINDOW)).fetchall()
    if not full:
        return
    due = {key: [row[0] for row in conn.execute(Q["throttled_due"], (key, now, KEYED_WINDOW))]
           for key, *_ in full}
    conn.executemany(Q["defer_job"], [(iso(at), id, now)
                                       for at, id in turns(full, due, now_ms)])


class SqliteJobs:
    """`JobStore` on one SQLite file."""

    def __init__(self, connector: SqliteConnector) -> None:
        self._db = connector
        self._wake = Wake()
        # Checkpoints queued behind a run that holds the writer (see `checkpoint`), kept
        # referenced until they are written.
        self._queued: set[asyncio.Task[Any]] = set()

    async def enqueue(self, jobs: Sequence[Job], bound: PendingBound | None = None) -> list[str]:
        def work(conn: sqlite3.Connection) -> list[str]:
            written, added = _insert(conn, jobs)
            if bound is not None and written:  # raising undoes the enqueue (a savepoint)
                counts = dict(conn.execute(Q["pending_counts"]).fetchall())
                check_pending(bound, counts, added)
            return written

        written = await self._db.write(work) if jobs else []
        if written:  # inside a run's transaction: once it commits
            transaction.after_commit(self._db, self._wake.set)
        return written

    async def _by_ids(self, sql: str, head: tuple[Any, ...], ids: Sequence[str],
                      tail: tuple[Any, ...] = ()) -> int:
        chunks = [list(ids[i:i + CHUNK]) for i in range(0, len(ids), CHUNK)]

        def work(conn: sqlite3.Connection) -> int:
            return sum(conn.execute(sql.format(ids=_placeholders(len(chunk))),
                                    (*head, *chunk, *tail)).rowcount for chunk in chunks)

        return await self._db.write(work) if chunks else 0

    async def cancel(self, ids: Sequence[str], at: datetime) -> int:
        return await self._by_ids(Q["cancel_jobs"], (iso(at),), ids)

    async def cancel_workflow(self, workflow: str, at: datetime) -> int:
        params = (iso(at), workflow)
        return int(await self._db.write(
            lambda conn: conn.execute(Q["cancel_workflow"], params).rowcount))

    async def set_series(self, workflow: str, subject: str, series: str | None,
                         at: datetime) -> int:
        def work(conn: sqlite3.Connection) -> int:
            if series is None:
                conn.execute(Q["clear_series"], (workflow, subject))
            else:
                conn.execute(Q["set_series"], (workflow, subject, series))
            return int(conn.execute(Q["cancel_subject"], (iso(at), workflow, subject)).rowcount)

        return int(await self._db.write(work))

    async def current_series(self, workflow: str, subject: str) -> str | None:
        rows = await self._db.fetch(Q["current_series"], (workflow, subject))
        return str(rows[0][0]) if rows else None

    async def claim(self, worker: str, now: datetime, lease_until: datetime,
                    limit: int) -> list[Job]:
        asked = time.monotonic()

        def work(conn: sqlite3.Connection) -> list[Any]:
            now_ms = started_ms(now, asked)  # the writer's turn came: the start
            rows = conn.execute(Q["claim_jobs"], (iso(lease_until), worker, now_ms, iso(now),
                                                  iso(now), limit)).fetchall()
            if len(rows) < limit and conn.execute(Q["keyed_due"], (iso(now),)).fetchone()[0]:
                rows += conn.execute(Q["claim_keyed_jobs"], {
                    "lease": iso(lease_until), "worker": worker, "now": iso(now),
                    "now_ms": now_ms, "window": KEYED_WINDOW,
                    "limit": limit - len(rows)}).fetchall()
                _defer_throttled(conn, iso(now), now_ms)
            return rows

        rows = await self._db.write(work)
        return sorted((job_from_row(row, _when) for row in rows), key=lambda j: j.due_at)

    async def renew(self, worker: str, ids: Sequence[str], lease_until: datetime) -> None:
        await self._by_ids(Q["renew_jobs"], (iso(lease_until), worker), ids)

    async def finish(self, id: str, worker: str, status: str, at: datetime, run_id: str | None,
                     error: str | None = None, retry_at: datetime | None = None) -> bool:
        params = (status, iso(at), run_id, error, iso(retry_at) if retry_at else None, id,
                  worker, None)
        return bool(await self._db.write(
            lambda conn: conn.execute(Q["finish_job"], params).rowcount))

    async def finish_many(self, worker: str, ends: Sequence[JobEnd]) -> set[str]:
        rows = [(end.status, iso(end.at), end.run_id, end.error,
                 iso(end.retry_at) if end.retry_at else None, end.id, worker, end.claims)
                for end in ends]

        def work(conn: sqlite3.Connection) -> tuple[set[str], list[str]]:
            done = {row[5] for row in rows if conn.execute(Q["finish_job"], row).rowcount}
            then = [end.then for end in ends if end.then is not None and end.id in done]
            return done, _insert(conn, then)[0] if then else []

        if not rows:
            return set()
        done, written = await self._db.write(work)
        if written:
            transaction.after_commit(self._db, self._wake.set)
        return set(done)

    async def settle(self, id: str, claims: int, at: datetime, run_id: str) -> None:
        params = (iso(at), run_id, id, claims)

        def work(conn: sqlite3.Connection) -> None:
            if not conn.execute(Q["settle_job"], params).rowcount:
                raise lease_lost(id)  # the writer rolls back what the unit wrote

        await self._db.write_later(work)  # with the run's other held writes: one call

    async def release(self, worker: str, ids: Sequence[str]) -> int:
        return await self._by_ids(Q["release_jobs"], (worker,), ids)

    async def get_job(self, id: str) -> Job | None:
        rows = await self._db.fetch(Q["get_job"], (id,))
        return job_from_row(rows[0], _when) if rows else None

    async def list_jobs(self, status: str | None = None, workflow: str | None = None,
                        limit: int = 50) -> list[Job]:
        rows = await self._db.fetch(Q["list_jobs"], (status, status, workflow, workflow, limit))
        return [job_from_row(row, _when) for row in rows]

    async def page_jobs(self, status: str | None = None, workflow: str | None = None,
                        limit: int = 50, *, before: Position | None = None) -> list[Job]:
        rows = await self._db.fetch(Q["page_jobs"], (
            status, workflow, limit, iso(before[0]) if before else None,
            before[1] if before else None))
        return [job_from_row(row, _when) for row in rows]

    async def retry(self, id: str, at: datetime, from_step: int | None = None) -> bool:
        def work(conn: sqlite3.Connection) -> int:
            changed = int(conn.execute(Q["retry_job"], (iso(at), id)).rowcount)
            if changed and from_step is not None:
                conn.execute(Q["forget_checkpoints"], (id, from_step))
            return changed

        changed = await self._db.write(work)
        if changed:
            self._wake.set()
        return bool(changed)

    async def last_tick(self, workflow: str) -> Job | None:
        rows = await self._db.fetch(Q["last_tick"], (workflow,))
        return job_from_row(rows[0], _when) if rows else None

    async def series_ticks(self, since: Position, limit: int) -> list[Job]:
        rows = await self._db.fetch(Q["series_ticks"], (iso(since[0]), since[1], limit))
        return [job_from_row(row, _when) for row in rows]

    async def pause(self, workflow: str | None, at: datetime) -> None:
        params = (workflow or "*", iso(at))
        await self._db.write(lambda conn: conn.execute(Q["pause"], params))

    async def resume(self, workflow: str | None) -> None:
        if workflow is None:
            await self._db.write(lambda conn: conn.execute(Q["resume_all"]))
        else:
            await self._db.write(lambda conn: conn.execute(Q["resume"], (workflow,)))
        self._wake.set()

    async def paused(self) -> list[str]:
        return [row[0] for row in await self._db.fetch(Q["paused"], ())]

    async def next_due(self, now: datetime | None = None) -> datetime | None:
        at = iso(now) if now is not None else None
        rows = self._db.read_here(lambda conn: conn.execute(Q["next_due"], (at,)).fetchall())
        return _when(rows[0][0]) if rows else None

    async def key_use(self, now: datetime, flow_keys: Sequence[str],
                      throttles: Sequence[tuple[str, int]],
                      deferred: Sequence[str] = ()) -> KeyUse:
        running, started, now_ms = {}, {}, epoch_ms(now)
        for key in dict.fromkeys(flow_keys):
            running[key] = int((await self._db.fetch(Q["key_running"], (key, now_ms)))[0][0])
        for key, ms in dict.fromkeys(throttles):
            rows = await self._db.fetch(Q["key_started"], (key, now_ms - ms))
            started[key] = int(rows[0][0])
        ids = list(dict.fromkeys(deferred))[:CHUNK]  # a page of a list: far fewer
        found = await self._db.fetch(
            Q["deferred_jobs"].format(ids=_placeholders(len(ids))), ids) if ids else []
        return running, started, frozenset(str(row[0]) for row in found)

    async def admit_call(self, id: str, keys: CallKeys, now: datetime,
                         until: datetime) -> float | None:
        asked = time.monotonic()

        def work(conn: sqlite3.Connection) -> float | None:
            now_ms = started_ms(now, asked)  # the writer's turn came: the start
            conn.execute(Q["purge_flow_calls"], (now_ms,))
            running = started = 0
            first = None
            if keys.flow_key is not None:
                running = conn.execute(Q["key_running"], (keys.flow_key, now_ms)).fetchone()[0]
            if keys.throttle_key is not None:
                since = now_ms - (keys.throttle_ms or 0)
                started, *firsts = conn.execute(Q["key_started"],
                                                (keys.throttle_key, since)).fetchone()
                first = first_of(*firsts)
            wait = call_wait(keys, running, started, first, now_ms)
            if wait is None:
                conn.execute(Q["add_flow_call"], (id, keys.workflow, keys.flow_key,
                                                  keys.throttle_key, now_ms, epoch_ms(until)))
            return wait

        return await self._db.write(work)

    async def end_call(self, id: str, keys: CallKeys, now: datetime) -> None:
        until = epoch_ms(now) + ((keys.throttle_ms or 0) if keys.throttle_key else 0)
        await self._db.write(lambda conn: conn.execute(Q["end_flow_call"], (id, until)))
        self._wake.set()  # a job of its key may start now

    async def flow_waiting(self, now: datetime) -> dict[str, int]:
        rows = await self._db.fetch(Q["flow_waiting"], (iso(now),))
        return {str(workflow): int(count) for workflow, count in rows}

    async def checkpoint(self, job_id: str, checkpoint: Checkpoint) -> None:
        """Written by a task of its own, outside the caller's transaction. A run that
        holds the writer (it wrote records) would wait for itself: its checkpoint is queued
        and commits right after the run's transaction ends, whichever way it ends."""
        c = checkpoint
        row = (job_id, c.place, c.action, c.step_id, c.run_id, iso(c.at), int(c.kept),
               dumps(c.result) if c.kept else None)
        task = asyncio.create_task(self._db.write(
            lambda conn: conn.execute(Q["put_checkpoint"], row)))
        current = transaction.current(self._db)
        if current is None or not current.written:
            await task
            return
        self._queued.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[Any]) -> None:
        self._queued.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not write a step's checkpoint: %s", task.exception())

    async def checkpoints(self, job_id: str) -> list[Checkpoint]:
        rows = await self._db.fetch(Q["job_checkpoints"], (job_id,))
        return [Checkpoint(place, action, step_id, run_id, parse_iso(at),
                           loads(result) if kept else None, bool(kept))
                for place, action, step_id, run_id, at, kept, result in rows]

    async def forget_checkpoints(self, job_id: str, from_step: int) -> int:
        params = (job_id, from_step)
        return int(await self._db.write(
            lambda conn: conn.execute(Q["forget_checkpoints"], params).rowcount))

    async def purge_checkpoints(self, before: datetime) -> int:
        at = iso(before)
        return int(await self._db.write(
            lambda conn: conn.execute(Q["purge_checkpoints"], (at,)).rowcount))

    async def wait(self, timeout: float) -> None:
        await self._wake.wait(timeout)
