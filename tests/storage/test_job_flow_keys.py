"""Concurrency keys in the job store, on both backends: a keyed job is claimed only while
fewer than its limit of its key's jobs run, one claim never takes more than the room left,
jobs without a key are claimed as before, and a keyed job that waits for its key is not
what the next wake-up is timed by. A claim that waits for its turn stamps a throttled
job's start when its turn came."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from support import query_sql

from gateway.storage import Job, Storage, open_storage
from gateway.storage.common.job_rows import epoch_ms

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=5)


def job(id: str, key: str | None = None, limit: int | None = None,
        due: datetime = NOW) -> Job:
    return Job(id, "sync", "schedule", due, data={"params": {}}, flow_key=key,
               flow_limit=limit if key is not None else None)


async def test_a_claim_takes_no_more_of_a_key_than_its_room(storage: Storage) -> None:
    await storage.jobs.enqueue(
        [job(f"a{i}", "sync:a", 2, NOW - timedelta(seconds=10 - i)) for i in range(5)]
        + [job(f"b{i}", "sync:b", 1, NOW - timedelta(seconds=10 - i)) for i in range(3)]
        + [job("free1"), job("free2")])
    first = await storage.jobs.claim("w1", NOW, LEASE, 10)
    assert sorted(j.id for j in first) == ["a0", "a1", "b0", "free1", "free2"]
    assert {j.id: (j.flow_key, j.flow_limit) for j in first}["a0"] == ("sync:a", 2)
    assert await storage.jobs.claim("w2", NOW, LEASE, 10) == []  # every key is full
    assert await storage.jobs.finish("a0", "w1", "done", NOW, None)
    again = await storage.jobs.claim("w2", NOW, LEASE, 10)
    assert [j.id for j in again] == ["a2"]  # the oldest waiting of the key with room
    assert await storage.jobs.finish("b0", "w1", "failed", NOW, None, "boom")
    assert await storage.jobs.finish("a1", "w1", "pending", NOW, None, "retry",
                                     NOW + timedelta(seconds=1))
    again = await storage.jobs.claim("w2", NOW, LEASE, 1)  # room for one: the oldest due
    assert [j.id for j in again] == ["b1"]
    # a1 waits for its retry, a2 runs: key a has room for one more
    assert [j.id for j in await storage.jobs.claim("w2", NOW, LEASE, 5)] == ["a3"]


async def test_a_waiting_keyed_job_leaves_the_next_due_to_others(storage: Storage) -> None:
    await storage.jobs.enqueue([job("k0", "sync:k", 1), job("k1", "sync:k", 1),
                                job("later", due=NOW + timedelta(minutes=1)),
                                job("k-later", "sync:k", 1, NOW + timedelta(seconds=30))])
    assert [j.id for j in await storage.jobs.claim("w", NOW, LEASE, 5)] == ["k0"]
    # k1 is due but waits for its key: the next due is the keyed job not yet due
    assert await storage.jobs.next_due(NOW) == NOW + timedelta(seconds=30)
    assert await storage.jobs.next_due() == NOW  # without `now`: every pending job


async def test_a_paused_keyed_workflow_is_not_claimed(storage: Storage) -> None:
    await storage.jobs.enqueue([job("k0", "sync:k", 1)])
    await storage.jobs.pause("sync", NOW)
    assert await storage.jobs.claim("w", NOW, LEASE, 5) == []
    await storage.jobs.resume("sync")
    assert [j.id for j in await storage.jobs.claim("w", NOW, LEASE, 5)] == ["k0"]


async def test_a_keyed_job_whose_lease_expired_is_claimed_again(storage: Storage) -> None:
    await storage.jobs.enqueue([job("k0", "sync:k", 1), job("k1", "sync:k", 1)])
    assert [j.id for j in await storage.jobs.claim("w1", NOW, NOW + timedelta(seconds=1),
                                                   5)] == ["k0"]
    later = NOW + timedelta(seconds=2)
    # k0's lease lapsed: it is taken over (its key's running jobs stay one), k1 still waits
    assert [j.id for j in await storage.jobs.claim("w2", later, LEASE, 5)] == ["k0"]
    assert await storage.jobs.claim("w3", later, LEASE, 5) == []


@pytest.mark.postgres
async def test_a_keyed_claim_on_postgresql_waits_for_one_in_flight_and_sees_its_claim(
        postgres_url: str) -> None:
    """Two workers' keyed claims cannot both find room: a claim takes the keyed-claim lock
    first and reads the jobs only once it holds it, so it sees what the claim before it
    took. Here a transaction holds the lock and, like a claim, makes k0 running; the
    claim waits, then finds the key full."""
    storage = open_storage(postgres_url)
    await storage.open()
    try:
        await storage.jobs.enqueue([job("k0", "sync:k", 1), job("k1", "sync:k", 1)])
        async with await psycopg.AsyncConnection.connect(postgres_url) as other:
            await other.execute("SELECT pg_advisory_xact_lock(7245623012)")
            await other.execute("UPDATE gateway_jobs SET status = 'running', worker = 'w0', "
                                "lease_until = %s WHERE id = 'k0'", (LEASE,))
            claim = asyncio.create_task(storage.jobs.claim("w1", NOW, LEASE, 5))
            await asyncio.sleep(0.3)
            assert not claim.done()  # it waits for the lock
            await other.commit()
            assert await asyncio.wait_for(claim, 10) == []  # k0 runs: k1 waits
    finally:
        await storage.close()


@contextlib.contextmanager
def turn_held(url: str) -> Iterator[None]:
    """What a claim waits for its turn behind, held by a connection of the test's own until
    the end of the block: PostgreSQL's keyed-claim lock, or SQLite's write lock (as another
    process's claim holds them)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("COMMIT")
        finally:
            conn.close()
        return
    with psycopg.connect(url) as pg:
        pg.execute("SELECT pg_advisory_xact_lock(7245623012)")
        yield  # committed, and the lock let go, as the block ends


async def test_a_claim_that_waited_for_its_turn_stamps_the_start_when_it_came(
        storage: Storage, storage_url: str) -> None:
    """A throttle counts a start from its job's `started_ms`. Stamped when the claim was
    asked for, before it waited 0.3 s for its turn, the start would leave its throttle's
    period 0.3 s early, and let more than the limit start within a period."""
    await storage.jobs.enqueue([Job("t0", "sync", "schedule", NOW, data={"params": {}},
                                    flow_key="sync:t", throttle_key="sync:t",
                                    throttle_limit=1, throttle_ms=1000)])
    with turn_held(storage_url):
        claim = asyncio.create_task(storage.jobs.claim("w", NOW, LEASE, 5))
        await asyncio.sleep(0.3)
        assert not claim.done()  # it waits for its turn
    assert [j.id for j in await asyncio.wait_for(claim, 10)] == ["t0"]
    [(started,)] = query_sql(storage_url, "SELECT started_ms FROM gateway_jobs")
    assert epoch_ms(NOW) + 300 <= started < epoch_ms(NOW) + 10_000


def throttled(id: str, key: str, limit: int, per_ms: int, due: datetime = NOW) -> Job:
    return Job(id, "sync", "schedule", due, data={"params": {}}, flow_key=key,
               throttle_key=key, throttle_limit=limit, throttle_ms=per_ms)


async def test_a_throttled_backlog_waits_for_its_turns_and_holds_back_no_other_key(
        storage: Storage) -> None:
    """600 jobs of one throttle key (2 an hour), more than a keyed claim's window, and a
    job of another key behind them: the claim that fills the throttle makes the key's due
    jobs due at their turns (two an hour), so the other key's job is claimed next, and the
    next wake-up is the throttle's next turn."""
    hour = 3_600_000
    await storage.jobs.enqueue(
        [throttled(f"t{i:03}", "sync:t", 2, hour, NOW - timedelta(seconds=700 - i))
         for i in range(600)] + [job("other", "sync:o", 1, NOW - timedelta(seconds=1))])
    first = await storage.jobs.claim("w", NOW, LEASE, 5)
    assert [j.id for j in first] == ["t000", "t001"]
    assert [j.id for j in await storage.jobs.claim("w", NOW, LEASE, 5)] == ["other"]
    assert await storage.jobs.claim("w", NOW, LEASE, 5) == []
    assert await storage.jobs.flow_waiting(NOW) == {"sync": 598}  # due, or made due later
    turn = NOW + timedelta(hours=1)
    assert abs((await storage.jobs.next_due(NOW) - turn).total_seconds()) < 2
    waiting = {j.id: j.due_at for j in await storage.jobs.list_jobs(
        workflow="sync", status="pending", limit=1000)}
    # in order, two a turn (the window's 500 this time; the rest at the next claims)
    assert abs((waiting["t002"] - turn).total_seconds()) < 2
    assert waiting["t003"] == waiting["t002"]
    assert abs((waiting["t004"] - waiting["t002"]).total_seconds() - 3600) < 0.01
    for id in ("t000", "t001", "other"):
        assert await storage.jobs.finish(id, "w", "done", NOW, None)
    later = turn + timedelta(seconds=2)
    assert [j.id for j in await storage.jobs.claim("w", later, later + timedelta(minutes=5),
                                                   5)] == ["t002", "t003"]


@pytest.mark.postgres
async def test_a_retry_racing_a_job_of_its_singleton_key_is_refused_not_an_error(
        postgres_url: str) -> None:
    """A failed singleton job retried while another transaction writes a job of its key,
    not yet committed: the retry waits for it, then is refused (False), not a database
    error naming the key."""
    storage = open_storage(postgres_url)
    await storage.open()
    try:
        jobs = storage.jobs
        await jobs.enqueue([Job("held", "w", "schedule", NOW, data={"params": {}},
                                single_key="w:k")])
        assert [j.id for j in await jobs.claim("w1", NOW, LEASE, 1)] == ["held"]
        assert await jobs.finish("held", "w1", "failed", NOW, None, "boom")
        async with await psycopg.AsyncConnection.connect(postgres_url) as other:
            await other.execute(
                "INSERT INTO gateway_jobs (id, workflow, source, status, due_at, attempt, "
                "created_at, data, single_key) VALUES ('new', 'w', 'schedule', 'pending', "
                "%s, 0, %s, '{}', 'w:k')", (NOW, NOW))
            retry = asyncio.create_task(jobs.retry("held", NOW))
            await asyncio.sleep(0.3)
            await other.commit()
            assert await asyncio.wait_for(retry, 10) is False
        assert (await jobs.get_job("held")).status == "failed"
    finally:
        await storage.close()


@pytest.mark.postgres
async def test_a_claim_does_not_wait_on_a_throttled_job_another_transaction_holds(
        postgres_url: str) -> None:
    """A due throttled job locked by another transaction (a debounce writing over it, a
    cancel) is left to it by the claim that makes its key's jobs due later: the claim,
    which holds the lock every keyed claim waits on, does not wait for it."""
    storage = open_storage(postgres_url)
    await storage.open()
    try:
        minute = 60_000
        await storage.jobs.enqueue([
            throttled("a0", "sync:a", 1, minute, NOW - timedelta(seconds=2)),
            throttled("a1", "sync:a", 1, minute, NOW - timedelta(seconds=1)),
            job("o0", "sync:o", 1, NOW)])
        async with await psycopg.AsyncConnection.connect(postgres_url) as other:
            await other.execute("UPDATE gateway_jobs SET data = data WHERE id = 'a1'")
            claimed = await asyncio.wait_for(storage.jobs.claim("w", NOW, LEASE, 5), 3)
            assert sorted(j.id for j in claimed) == ["a0", "o0"]
            await other.rollback()
    finally:
        await storage.close()


async def test_a_deferred_job_retried_waits_for_its_time_not_its_throttle(
        storage: Storage) -> None:
    hour = 3_600_000
    await storage.jobs.enqueue([throttled("a0", "sync:a", 1, hour),
                                throttled("a1", "sync:a", 1, hour)])
    assert [j.id for j in await storage.jobs.claim("w", NOW, LEASE, 5)] == ["a0"]
    assert await storage.jobs.flow_waiting(NOW) == {"sync": 1}  # a1: at its turn
    assert await storage.jobs.cancel(["a1"], NOW) == 1
    assert await storage.jobs.retry("a1", NOW + timedelta(days=1))
    assert await storage.jobs.flow_waiting(NOW) == {}  # due tomorrow: its time, not a turn
