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
