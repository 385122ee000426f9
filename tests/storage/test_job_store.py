"""The jobs role of the storage contract, on both backends: enqueue, claim with a lease,
finish, retry, cancel, pause, and unique keys."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from gateway.core.errors import LeaseLostError
from gateway.core.ids import new_id
from gateway.storage import Job, JobEnd, Storage, open_storage

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def job(workflow: str = "wf", due: datetime = T0, unique_key: str | None = None) -> Job:
    return Job(id=new_id(due), workflow=workflow, source="recurring" if unique_key else "schedule",
               due_at=due, data={"params": {"n": 1}, "identity": {"kind": "admin"}},
               unique_key=unique_key)


async def test_a_due_job_is_claimed_once_and_finished(storage: Storage) -> None:
    first, later = job(), job(due=T0 + timedelta(hours=1))
    assert await storage.jobs.enqueue([first, later]) == [first.id, later.id]
    claimed = await storage.jobs.claim("w1", T0, T0 + timedelta(minutes=1), 10)
    assert [j.id for j in claimed] == [first.id]
    assert claimed[0].attempt == 1 and claimed[0].status == "running"
    assert claimed[0].data["params"] == {"n": 1}
    assert await storage.jobs.claim("w2", T0, T0 + timedelta(minutes=1), 10) == []
    assert await storage.jobs.finish(first.id, "w1", "done", T0, "run1")
    stored = await storage.jobs.get_job(first.id)
    assert stored is not None and stored.status == "done" and stored.run_id == "run1"
    assert not await storage.jobs.finish(first.id, "w1", "done", T0, "run1")


async def test_an_expired_lease_lets_another_worker_take_the_job(storage: Storage) -> None:
    one = job()
    await storage.jobs.enqueue([one])
    await storage.jobs.claim("dead", T0, T0 + timedelta(seconds=30), 10)
    assert await storage.jobs.claim("w2", T0 + timedelta(seconds=10),
                                    T0 + timedelta(seconds=40), 10) == []
    again = await storage.jobs.claim("w2", T0 + timedelta(seconds=31),
                                     T0 + timedelta(seconds=90), 10)
    assert [j.id for j in again] == [one.id] and again[0].attempt == 2
    # the dead worker's late answer is refused: the job is w2's now
    assert not await storage.jobs.finish(one.id, "dead", "done", T0, None)
    assert await storage.jobs.finish(one.id, "w2", "done", T0, None)


async def test_retry_fail_release_and_replay(storage: Storage) -> None:
    one = job()
    await storage.jobs.enqueue([one])
    await storage.jobs.claim("w", T0, T0 + timedelta(minutes=1), 1)
    await storage.jobs.finish(one.id, "w", "pending", T0, "r1", "boom",
                              retry_at=T0 + timedelta(seconds=5))
    assert await storage.jobs.claim("w", T0, T0 + timedelta(minutes=1), 1) == []
    (again,) = await storage.jobs.claim("w", T0 + timedelta(seconds=5),
                                        T0 + timedelta(minutes=1), 1)
    assert again.attempt == 2 and again.error == "boom"
    await storage.jobs.finish(one.id, "w", "failed", T0, "r2", "boom again")
    failed = await storage.jobs.list_jobs(status="failed")
    assert [j.error for j in failed] == ["boom again"]
    assert await storage.jobs.retry(one.id, T0)
    assert not await storage.jobs.retry(one.id, T0)  # pending now: nothing to replay
    (replayed,) = await storage.jobs.claim("w", T0, T0 + timedelta(minutes=1), 1)
    assert replayed.attempt == 1
    assert await storage.jobs.release("w", [one.id]) == 1
    (back,) = await storage.jobs.claim("w", T0, T0 + timedelta(minutes=1), 1)
    assert back.attempt == 1


async def test_cancel_pause_and_unique_keys(storage: Storage) -> None:
    a, b = job("a"), job("b")
    tick = job("c", unique_key="recurring:c:2026")
    assert await storage.jobs.enqueue([a, b, tick]) == [a.id, b.id, tick.id]
    assert await storage.jobs.enqueue([job("c", unique_key="recurring:c:2026")]) == []
    assert await storage.jobs.cancel([a.id, "no-such-id"], T0) == 1
    await storage.jobs.pause("b", T0)
    assert await storage.jobs.paused() == ["b"]
    claimed = await storage.jobs.claim("w", T0, T0 + timedelta(minutes=1), 10)
    assert [j.workflow for j in claimed] == ["c"]
    await storage.jobs.pause(None, T0)
    await storage.jobs.resume("b")
    await storage.jobs.enqueue([job("d")])
    assert await storage.jobs.claim("w", T0, T0 + timedelta(minutes=1), 10) == []
    await storage.jobs.resume(None)
    claimed = await storage.jobs.claim("w", T0, T0 + timedelta(minutes=1), 10)
    assert sorted(j.workflow for j in claimed) == ["b", "d"]
    last = await storage.jobs.last_tick("c")
    assert last is not None and last.id == tick.id


async def test_series_ticks_pages_pending_per_record_ticks_soonest_first(
        storage: Storage) -> None:
    def series(due: datetime, subject: str | None = "r1") -> Job:
        id = new_id(due)
        return Job(id, "daily", "recurring", due, subject=subject, unique_key=f"k:{id}",
                   data={"frequency": "daily"})

    ticks = [series(T0 + timedelta(days=d)) for d in (3, 1, 2, 2)]
    others = [series(T0 + timedelta(days=5), None), job(due=T0 + timedelta(days=5)),
              series(T0 + timedelta(days=6))]
    await storage.jobs.enqueue([*ticks, *others])
    await storage.jobs.cancel([others[2].id], T0)  # not pending any more
    wanted = sorted(ticks, key=lambda t: (t.due_at, t.id))
    first = await storage.jobs.series_ticks((T0, ""), 2)
    assert [t.id for t in first] == [t.id for t in wanted[:2]]
    rest = await storage.jobs.series_ticks((first[-1].due_at, first[-1].id), 10)
    assert [t.id for t in rest] == [t.id for t in wanted[2:]]
    assert rest[0].data["frequency"] == "daily" and rest[0].subject == "r1"
    assert await storage.jobs.series_ticks((T0 + timedelta(days=3), wanted[-1].id), 10) == []


def series_tick(series: str, day: int, subject: str = "r1") -> Job:
    due = T0 + timedelta(days=day)
    return Job(new_id(due), "daily", "recurring", due, subject=subject,
               unique_key=f"k:{subject}:{series}:{day}",
               data={"frequency": "daily", "series": series})


async def test_a_series_tick_is_written_only_while_its_series_is_current(
        storage: Storage) -> None:
    assert await storage.jobs.enqueue([series_tick("s-1", 1)]) == []  # no series started
    assert await storage.jobs.set_series("daily", "r1", "s-1", T0) == 0
    first = series_tick("s-1", 1)
    assert await storage.jobs.enqueue([first]) == [first.id]
    # replaced: the pending tick of the series before is cancelled, and none written again
    assert await storage.jobs.set_series("daily", "r1", "s-2", T0) == 1
    late, new = series_tick("s-1", 2), series_tick("s-2", 2)
    assert await storage.jobs.enqueue([late, new]) == [new.id]
    # the series of one record is no other's; a job that is no tick of a series is free
    other, plain = series_tick("s-2", 2, subject="r2"), job()
    assert await storage.jobs.enqueue([other, plain]) == [plain.id]
    # stopped
    assert await storage.jobs.set_series("daily", "r1", None, T0) == 1
    assert await storage.jobs.enqueue([series_tick("s-2", 3)]) == []
    assert [j.id for j in await storage.jobs.list_jobs("pending")] == [plain.id]


async def test_enqueue_wakes_a_waiting_worker(storage: Storage) -> None:
    waiter = asyncio.create_task(storage.jobs.wait(30))
    await asyncio.sleep(0.2)  # let the listener start (PostgreSQL); not a synchronisation
    await storage.jobs.enqueue([job()])
    await asyncio.wait_for(waiter, 10)


async def test_many_jobs_in_one_call(storage: Storage) -> None:
    jobs = [job(due=T0 + timedelta(microseconds=i)) for i in range(2000)]
    assert len(await storage.jobs.enqueue(jobs)) == 2000
    assert await storage.jobs.cancel([j.id for j in jobs[:1500]], T0) == 1500
    claimed = await storage.jobs.claim("w", T0 + timedelta(seconds=1), T0 + timedelta(minutes=1),
                                       1000)
    assert len(claimed) == 500


async def test_many_ends_in_one_call_only_for_this_worker_s_jobs(storage: Storage) -> None:
    a, b, c = job("a"), job("b"), job("c")
    await storage.jobs.enqueue([a, b, c])
    await storage.jobs.claim("w", T0, T0 + timedelta(minutes=1), 2)  # a and b
    done = await storage.jobs.finish_many("w", [
        JobEnd(a.id, "done", T0, "r-a"),
        JobEnd(b.id, "pending", T0, "r-b", "boom", T0 + timedelta(hours=1)),
        JobEnd(c.id, "done", T0, "r-c")])  # c was never this worker's
    assert done == {a.id, b.id}
    stored = {j.id: j for j in await storage.jobs.list_jobs()}
    assert (stored[a.id].status, stored[a.id].run_id) == ("done", "r-a")
    assert (stored[b.id].status, stored[b.id].error, stored[b.id].due_at) == (
        "pending", "boom", T0 + timedelta(hours=1))
    assert stored[c.id].status == "pending" and await storage.jobs.finish_many("w", []) == set()


async def test_settle_ends_a_job_only_for_the_claim_a_run_was_started_by(
        storage: Storage) -> None:
    one = job()
    await storage.jobs.enqueue([one])
    (first,) = await storage.jobs.claim("w1", T0, T0 + timedelta(seconds=30), 1)
    (taken,) = await storage.jobs.claim("w2", T0 + timedelta(seconds=31),
                                        T0 + timedelta(seconds=61), 1)
    assert (first.claims, taken.claims) == (1, 2)
    with pytest.raises(LeaseLostError, match="a newer claim took the job"):
        await storage.jobs.settle(one.id, first.claims, T0, "r-late")  # w1's claim is over
    await storage.jobs.settle(one.id, taken.claims, T0, "r-2")
    stored = await storage.jobs.get_job(one.id)
    assert stored is not None and (stored.status, stored.run_id, stored.worker) == (
        "done", "r-2", None)
    with pytest.raises(LeaseLostError):  # once
        await storage.jobs.settle(one.id, taken.claims, T0, "r-2")
    assert not await storage.jobs.finish(one.id, "w2", "done", T0, "r-2")  # ended already


async def test_a_claim_after_a_retry_is_told_from_the_claims_before_it(
        storage: Storage) -> None:
    """A retry counts attempts anew (and a release takes one back): the claims a job has
    had are counted apart, so that a run of attempt 1 long ago cannot end attempt 1 of now."""
    one = job()
    await storage.jobs.enqueue([one])
    (stale,) = await storage.jobs.claim("w1", T0, T0 + timedelta(seconds=30), 1)
    later = T0 + timedelta(minutes=1)
    await storage.jobs.claim("w2", later, later + timedelta(seconds=30), 1)
    assert await storage.jobs.finish(one.id, "w2", "failed", later, "r-2", "boom")
    assert await storage.jobs.retry(one.id, later)
    (now,) = await storage.jobs.claim("w3", later, later + timedelta(seconds=30), 1)
    assert (stale.attempt, now.attempt) == (1, 1) and (stale.claims, now.claims) == (1, 3)
    with pytest.raises(LeaseLostError):
        await storage.jobs.settle(one.id, stale.claims, later, "r-stale")
    assert await storage.jobs.release("w3", [one.id]) == 1  # given back: one claim less
    (again,) = await storage.jobs.claim("w4", later, later + timedelta(seconds=30), 1)
    assert (again.attempt, again.claims) == (1, 4)
    await storage.jobs.settle(one.id, again.claims, later, "r-4")


async def test_a_late_end_of_a_lapsed_claim_never_ends_the_same_worker_s_newer_claim(
        storage: Storage) -> None:
    one = job()
    await storage.jobs.enqueue([one])
    (stale,) = await storage.jobs.claim("w", T0, T0 + timedelta(seconds=30), 1)
    later = T0 + timedelta(minutes=1)
    (newer,) = await storage.jobs.claim("w", later, later + timedelta(seconds=30), 1)
    assert await storage.jobs.finish_many("w", [
        JobEnd(one.id, "failed", later, "r-stale", "boom", claims=stale.claims)]) == set()
    still = await storage.jobs.get_job(one.id)
    assert still is not None and (still.status, still.worker) == ("running", "w")
    assert await storage.jobs.finish_many("w", [
        JobEnd(one.id, "done", later, "r-new", claims=newer.claims)]) == {one.id}


@pytest.mark.parametrize("held_back", [True, False])
async def test_a_refused_settle_rolls_back_its_transaction(storage: Storage,
                                                           held_back: bool) -> None:
    """Whether the transaction's writes were held back until its end (a new record, which
    needs no answer from the database) or made already (jobs enqueued)."""
    one = job()
    await storage.jobs.enqueue([one])
    await storage.jobs.claim("w1", T0, T0 + timedelta(seconds=30), 1)
    await storage.jobs.claim("w2", T0 + timedelta(seconds=31), T0 + timedelta(seconds=61), 1)
    transaction = storage.begin(30)
    try:
        if held_back:
            await storage.records.create("note", {"by": "the late run"})
        else:
            await storage.jobs.enqueue([job("made-by-the-late-run")])
        with pytest.raises(LeaseLostError):
            await storage.jobs.settle(one.id, 1, T0, "r-late")  # the first claim's
            await transaction.commit()  # a held-back settle is refused here
    finally:
        await transaction.rollback()
    assert await storage.jobs.list_jobs(workflow="made-by-the-late-run") == []
    assert (await storage.records.search("note")).results == []
    stored = await storage.jobs.get_job(one.id)
    assert stored is not None and (stored.status, stored.worker) == ("running", "w2")


@pytest.mark.postgres
async def test_renewing_leases_skips_a_job_another_statement_holds(postgres_url: str) -> None:
    """A worker's renewal never waits for a row its batch of ends (or a run's settle)
    holds: waiting in another order than theirs could deadlock, and the database would
    abort one of them (lost ends run their jobs again)."""
    storage = open_storage(postgres_url)
    await storage.open([])
    try:
        held, free = job(), job()
        await storage.jobs.enqueue([held, free])
        await storage.jobs.claim("w", T0, T0 + timedelta(seconds=30), 2)
        async with await psycopg.AsyncConnection.connect(postgres_url) as other:
            await other.execute("SELECT 1 FROM gateway_jobs WHERE id = %s FOR UPDATE",
                                (held.id,))
            await asyncio.wait_for(storage.jobs.renew(
                "w", [held.id, free.id], T0 + timedelta(minutes=5)), 10)
            await other.rollback()
        leases = {j.id: j.lease_until for j in await storage.jobs.list_jobs()}
        assert leases == {held.id: T0 + timedelta(seconds=30),
                          free.id: T0 + timedelta(minutes=5)}
    finally:
        await storage.close()


@pytest.mark.postgres
async def test_a_tick_written_while_its_series_is_replaced_waits_for_nothing(
        postgres_url: str) -> None:
    """A run that replaces a record's series holds no lock that a tick of the series before,
    written meanwhile (as its running tick ends), waits for: the tick is written (the worker
    that claims it finds its series replaced: `current_series`), and no run waits on
    another, nor deadlocks with one that changes the record."""
    storage = open_storage(postgres_url)
    await storage.open([])
    try:
        await storage.jobs.set_series("daily", "r1", "s-1", T0)
        replaced, release = asyncio.Event(), asyncio.Event()

        async def replace() -> None:
            transaction = storage.begin(30)
            try:
                await storage.jobs.set_series("daily", "r1", "s-2", T0)
                replaced.set()
                await release.wait()
                await storage.jobs.enqueue([series_tick("s-2", 1)])
                await transaction.commit()
            finally:
                await transaction.rollback()  # unless it committed

        replacing = asyncio.create_task(replace())
        await replaced.wait()
        # while the replacement is not committed: written at once, with no wait
        written = await asyncio.wait_for(storage.jobs.enqueue([series_tick("s-1", 1)]), 10)
        assert len(written) == 1 and not replacing.done()
        release.set()
        await replacing
        pending = await storage.jobs.list_jobs("pending")
        assert sorted(j.data["series"] for j in pending) == ["s-1", "s-2"]
        assert await storage.jobs.current_series("daily", "r1") == "s-2"
        await storage.jobs.set_series("daily", "r1", None, T0)
        assert await storage.jobs.current_series("daily", "r1") is None
    finally:
        await storage.close()
