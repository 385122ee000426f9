"""Jobs on PostgreSQL: `JobStore` over a `PostgresConnector`.

Workers claim with `FOR UPDATE SKIP LOCKED`, so any number of them (in any number of
instances) never take the same job. Enqueued jobs are written in one transaction that
ends with a `NOTIFY`; each instance keeps one connection `LISTEN`ing, which wakes its
workers. A lost notification costs a poll interval, never a job.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from gateway.core.encoding import dumps
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
from gateway.storage.postgresql.connector import Conn, PostgresConnector, jsonb

Q = queries("postgresql")
LISTEN_RETRY_SECONDS = 5.0
ENQUEUE_CHUNK = 1000  # jobs per statement
COMPACT_ROWS = 1000  # a tally longer than this is folded by the enqueue that finds it
KEYED_WINDOW = 500  # due keyed jobs a keyed claim ranks (see `claim_keyed_jobs`)
log = logging.getLogger("gateway.storage")


def _when(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _row(job: Job) -> tuple[Any, ...]:
    return (job.id, job.workflow, job.source, job.due_at, job.unique_key, job.subject,
            job.created_at or job.due_at, dumps(dict(job.data)), series_of(job), job.flow_key,
            job.flow_limit, job.throttle_key, job.throttle_limit, job.throttle_ms,
            job.debounce_key, job.single_key)


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as the column arrays `enqueue_jobs` takes."""
    return [list(column) for column in zip(*rows, strict=True)]


async def _insert(conn: Conn, jobs: Sequence[Job],
                  chunks: Sequence[list[list[Any]]]) -> tuple[list[str], set[str]]:
    """`jobs` (as `chunks` of their columns) written on `conn`, those `enqueue_jobs` takes,
    and counted as pending: their ids, and the workflows they add to. Jobs of debounced
    workflows are not in `chunks`: each is written (or written over the one waiting with
    its key, and then neither counted nor returned) by a statement of its own."""
    written: list[str] = []
    for columns in chunks:
        cursor = await conn.execute(Q["enqueue_jobs"].encode(), columns)
        written.extend(row[0] for row in await cursor.fetchall())
    for job in jobs:
        if job.debounce_key is not None:
            row = _row(job)
            cursor = await conn.execute(Q["enqueue_debounced"].encode(), (*row[:8], *row[9:]))
            if (await cursor.fetchone() or (None,))[0] == job.id:
                written.append(job.id)
    if not written:
        return written, set()
    workflows = {job.id: job.workflow for job in jobs}
    added = collections.Counter(workflows[id] for id in written)
    await conn.execute(Q["add_pending"].encode(), [list(added), list(added.values())])
    return written, set(added)


async def _defer_throttled(conn: Conn, now: datetime, now_ms: int) -> None:
    """The due jobs of throttle keys left full by a claim made due at their turns
    (`turns`), in the claim's transaction."""
    cursor = await conn.execute(Q["full_throttles"].encode(), {
        "now": now, "now_ms": now_ms, "window": KEYED_WINDOW})
    full = await cursor.fetchall()
    if not full:
        return
    due = {}
    for key, *_ in full:
        cursor = await conn.execute(Q["throttled_due"].encode(), {
            "key": key, "now": now, "window": KEYED_WINDOW})
        due[key] = [row[0] for row in await cursor.fetchall()]
    async with conn.cursor() as many:
        await many.executemany(Q["defer_job"].encode(),
                               [(at, id, now) for at, id in turns(full, due, now_ms)])


class PostgresJobs:
    """`JobStore` on a PostgreSQL database."""

    def __init__(self, connector: PostgresConnector, url: str) -> None:
        self._db = connector
        self._url = url
        self._wake = Wake()
        self._listener: asyncio.Task[None] | None = None

    async def enqueue(self, jobs: Sequence[Job], bound: PendingBound | None = None) -> list[str]:
        if not jobs:
            return []
        chunks = []
        plain = [job for job in jobs if job.debounce_key is None]
        for start in range(0, len(plain), ENQUEUE_CHUNK):
            chunks.append(_columns([_row(job) for job in plain[start:start + ENQUEUE_CHUNK]]))
            await asyncio.sleep(0)  # a list of 100,000 must not hold the event loop

        async def work(conn: Conn) -> list[str]:
            written, added = await _insert(conn, jobs, chunks)
            if not written:
                return written
            if bound is not None:  # raising undoes the enqueue (a savepoint)
                await self._check(conn, bound, added)
            await conn.execute(Q["notify_jobs"].encode())  # heard once the transaction commits
            return written

        written = await self._db.atomic(work)
        if written:  # inside a run's transaction: once it commits
            transaction.after_commit(self._db, self._wake.set)
        return written

    @staticmethod
    async def _check(conn: Conn, bound: PendingBound, added: set[str]) -> None:
        """The bound on pending jobs, read from the tally (folded when it grew long)."""
        tally = await (await conn.execute(Q["pending_tally"].encode())).fetchall()
        check_pending(bound, {str(name): int(count) for name, count, _ in tally}, added)
        if sum(rows for _, _, rows in tally) > COMPACT_ROWS:
            await conn.execute(Q["compact_job_tally"].encode())

    async def cancel(self, ids: Sequence[str], at: datetime) -> int:
        return await self._db.execute(Q["cancel_jobs"], (at, list(ids))) if ids else 0

    async def cancel_workflow(self, workflow: str, at: datetime) -> int:
        return await self._db.execute(Q["cancel_workflow"], (at, workflow))

    async def set_series(self, workflow: str, subject: str, series: str | None,
                         at: datetime) -> int:
        async def work(conn: Conn) -> int:
            # No lock orders this against a tick of the series before, written meanwhile
            # (a run would wait on another, or deadlock with it): such a tick is cancelled
            # by the worker that claims it (`current_series`).
            if series is None:
                await conn.execute(Q["clear_series"].encode(), (workflow, subject))
            else:
                await conn.execute(Q["set_series"].encode(), (workflow, subject, series))
            cursor = await conn.execute(Q["cancel_subject"].encode(), (at, workflow, subject))
            return cursor.rowcount

        return await self._db.atomic(work)

    async def current_series(self, workflow: str, subject: str) -> str | None:
        rows = await self._db.fetch(Q["current_series"], (workflow, subject))
        return str(rows[0][0]) if rows else None

    async def claim(self, worker: str, now: datetime, lease_until: datetime,
                    limit: int) -> list[Job]:
        asked = time.monotonic()
        params = {"now": now, "limit": limit, "lease": lease_until, "worker": worker,
                  "now_ms": epoch_ms(now)}
        rows = await self._db.fetch(Q["claim_jobs"], params)
        jobs = [job_from_row(row, _when) for row in rows if row[0] is not None]
        if rows and rows[0][-1] and len(jobs) < limit:  # keyed jobs are due: the room left
            params["limit"], params["window"] = limit - len(jobs), KEYED_WINDOW

            async def keyed(conn: Conn) -> list[Any]:
                await conn.execute(Q["lock_keyed_claims"].encode())
                params["now_ms"] = turn = started_ms(now, asked)  # its turn came: the start
                cursor = await conn.execute(Q["claim_keyed_jobs"].encode(), params)
                claimed = await cursor.fetchall()
                await _defer_throttled(conn, now, turn)
                return claimed

            jobs += [job_from_row(row, _when) for row in await self._db.alone(keyed)]
        return sorted(jobs, key=lambda j: j.due_at)

    async def renew(self, worker: str, ids: Sequence[str], lease_until: datetime) -> None:
        if ids:
            await self._db.execute(Q["renew_jobs"], (lease_until, worker, list(ids)))

    async def finish(self, id: str, worker: str, status: str, at: datetime, run_id: str | None,
                     error: str | None = None, retry_at: datetime | None = None) -> bool:
        return bool(await self._db.execute(
            Q["finish_job"], (status, at, run_id, error, retry_at, id, worker)))

    async def finish_many(self, worker: str, ends: Sequence[JobEnd]) -> set[str]:
        if not ends:
            return set()
        params = {
            "ids": [e.id for e in ends], "statuses": [e.status for e in ends],
            "ats": [e.at for e in ends], "runs": [e.run_id for e in ends],
            "errors": [e.error for e in ends], "retries": [e.retry_at for e in ends],
            "claims": [e.claims for e in ends], "worker": worker}
        if all(end.then is None for end in ends):
            return {row[0] for row in await self._db.fetch(Q["finish_jobs"], params)}

        async def work(conn: Conn) -> tuple[set[str], list[str]]:
            cursor = await conn.execute(Q["finish_jobs"].encode(), params)
            done = {row[0] for row in await cursor.fetchall()}
            then = [end.then for end in ends if end.then is not None and end.id in done]
            if not then:
                return done, []
            written, _ = await _insert(conn, then, [_columns([_row(job) for job in then])])
            if written:
                await conn.execute(Q["notify_jobs"].encode())
            return done, written

        done, written = await self._db.atomic(work)
        if written:
            transaction.after_commit(self._db, self._wake.set)
        return done

    async def settle(self, id: str, claims: int, at: datetime, run_id: str) -> None:
        await self._db.execute_later(Q["settle_job"], (at, run_id, id, claims),
                                     refusal=lease_lost(id))

    async def release(self, worker: str, ids: Sequence[str]) -> int:
        return await self._db.execute(Q["release_jobs"], (worker, list(ids))) if ids else 0

    async def get_job(self, id: str) -> Job | None:
        rows = await self._db.fetch(Q["get_job"], (id,))
        return job_from_row(rows[0], _when) if rows else None

    async def list_jobs(self, status: str | None = None, workflow: str | None = None,
                        limit: int = 50) -> list[Job]:
        rows = await self._db.fetch(Q["list_jobs"], {
            "status": status, "workflow": workflow, "limit": limit})
        return [job_from_row(row, _when) for row in rows]

    async def page_jobs(self, status: str | None = None, workflow: str | None = None,
                        limit: int = 50, *,
                        before: tuple[datetime, str] | None = None) -> list[Job]:
        rows = await self._db.fetch(Q["page_jobs"], {
            "status": status, "workflow": workflow, "limit": limit,
            "before_at": before[0] if before else None,
            "before_id": before[1] if before else None})
        return [job_from_row(row, _when) for row in rows]

    async def retry(self, id: str, at: datetime, from_step: int | None = None) -> bool:
        async def work(conn: Conn) -> bool:
            try:
                async with conn.transaction():  # a savepoint: a refusal leaves the rest
                    cursor = await conn.execute(Q["retry_job"].encode(), (at, id))
            except psycopg.errors.UniqueViolation:
                return False  # a job of its singleton or debounce key, written meanwhile
            if not cursor.rowcount:
                return False
            if from_step is not None:
                await conn.execute(Q["forget_checkpoints"].encode(), (id, from_step))
            await conn.execute(Q["notify_jobs"].encode())
            return True

        return await self._db.atomic(work)

    async def last_tick(self, workflow: str) -> Job | None:
        rows = await self._db.fetch(Q["last_tick"], (workflow,))
        return job_from_row(rows[0], _when) if rows else None

    async def series_ticks(self, since: Position, limit: int) -> list[Job]:
        rows = await self._db.fetch(Q["series_ticks"], (since[0], since[1], limit))
        return [job_from_row(row, _when) for row in rows]

    async def pause(self, workflow: str | None, at: datetime) -> None:
        await self._db.execute(Q["pause"], (workflow or "*", at))

    async def resume(self, workflow: str | None) -> None:
        if workflow is None:
            await self._db.execute(Q["resume_all"])
        else:
            await self._db.execute(Q["resume"], (workflow,))
        await self._db.execute(Q["notify_jobs"])

    async def paused(self) -> list[str]:
        return [row[0] for row in await self._db.fetch(Q["paused"])]

    async def next_due(self, now: datetime | None = None) -> datetime | None:
        rows = await self._db.fetch(Q["next_due"], {"now": now})
        return _when(rows[0][0]) if rows else None

    async def key_use(self, now: datetime, flow_keys: Sequence[str],
                      throttles: Sequence[tuple[str, int]],
                      deferred: Sequence[str] = ()) -> KeyUse:
        running, started, now_ms = {}, {}, epoch_ms(now)
        for key in dict.fromkeys(flow_keys):
            rows = await self._db.fetch(Q["key_running"], {"key": key, "now_ms": now_ms})
            running[key] = int(rows[0][0])
        for key, ms in dict.fromkeys(throttles):
            rows = await self._db.fetch(Q["key_started"], {"key": key, "since": now_ms - ms})
            started[key] = int(rows[0][0])
        found = await self._db.fetch(Q["deferred_jobs"], (list(deferred),)) if deferred else []
        return running, started, frozenset(str(row[0]) for row in found)

    async def admit_call(self, id: str, keys: CallKeys, now: datetime,
                         until: datetime) -> float | None:
        asked = time.monotonic()

        async def work(conn: Conn) -> float | None:
            await conn.execute(Q["lock_keyed_claims"].encode())  # as keyed claims: one at a time
            now_ms = started_ms(now, asked)  # its turn came: the start
            await conn.execute(Q["purge_flow_calls"].encode(), (now_ms,))
            running = started = 0
            first = None
            if keys.flow_key is not None:
                cursor = await conn.execute(Q["key_running"].encode(),
                                            {"key": keys.flow_key, "now_ms": now_ms})
                running = (await cursor.fetchone() or (0,))[0]
            if keys.throttle_key is not None:
                cursor = await conn.execute(Q["key_started"].encode(), {
                    "key": keys.throttle_key, "since": now_ms - (keys.throttle_ms or 0)})
                started, *firsts = await cursor.fetchone() or (0, None, None)
                first = first_of(*firsts)
            wait = call_wait(keys, running, started, first, now_ms)
            if wait is None:
                await conn.execute(Q["add_flow_call"].encode(), (
                    id, keys.workflow, keys.flow_key, keys.throttle_key, now_ms,
                    epoch_ms(until)))
            return wait

        return await self._db.alone(work)

    async def end_call(self, id: str, keys: CallKeys, now: datetime) -> None:
        until = epoch_ms(now) + ((keys.throttle_ms or 0) if keys.throttle_key else 0)
        await self._db.fetch(Q["end_flow_call"], (until, id), write=True)
        self._wake.set()  # a job of its key may start now (other instances: notified)

    async def flow_waiting(self, now: datetime) -> dict[str, int]:
        rows = await self._db.fetch(Q["flow_waiting"], (now,))
        return {str(workflow): int(count) for workflow, count in rows}

    async def checkpoint(self, job_id: str, checkpoint: Checkpoint) -> None:
        """In a transaction of its own, on a connection of its own: the caller's
        transaction, if any, does not hold it back."""
        c = checkpoint
        params = (job_id, c.place, c.action, c.step_id, c.run_id, c.at, c.kept,
                  jsonb(c.result) if c.kept else None)

        async def work(conn: Conn) -> None:
            await conn.execute(Q["put_checkpoint"].encode(), params)

        await self._db.alone(work)

    async def checkpoints(self, job_id: str) -> list[Checkpoint]:
        rows = await self._db.fetch(Q["job_checkpoints"], (job_id,))
        return [Checkpoint(place, action, step_id, run_id, at, result if kept else None,
                           bool(kept))
                for place, action, step_id, run_id, at, kept, result in rows]

    async def forget_checkpoints(self, job_id: str, from_step: int) -> int:
        return await self._db.execute(Q["forget_checkpoints"], (job_id, from_step))

    async def purge_checkpoints(self, before: datetime) -> int:
        return await self._db.execute(Q["purge_checkpoints"], (before,))

    async def wait(self, timeout: float) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="gateway-jobs-listen")
        await self._wake.wait(timeout)

    async def _listen(self) -> None:
        """One connection LISTENing for as long as the store is open; reconnects after a
        failure (polling covers the gap)."""
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
                async with conn:
                    await conn.execute(Q["listen_jobs"].encode())
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error as exc:
                log.warning("job notifications lost, polling meanwhile: %s", exc)
                await asyncio.sleep(LISTEN_RETRY_SECONDS)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                await self._listener
            self._listener = None
