"""Step checkpoints of jobs' runs, on both backends: written on their own (a rolled-back
transaction of the writer keeps them), read in one query, forgotten from a step on, and
purged with the run log's retention or once their job is done."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from gateway.core.ids import new_id
from gateway.core.settings import Settings
from gateway.storage import Job, Storage
from gateway.storage.contract import Checkpoint
from gateway.storage.retention import purge_checkpoints_once

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def point(place: str, result: object = None, kept: bool = True, at: datetime = T0) -> Checkpoint:
    return Checkpoint(place, "send_email", "mail", "run1", at, result, kept)


async def a_job(storage: Storage) -> str:
    job = Job(id=new_id(T0), workflow="wf", source="schedule", due_at=T0)
    await storage.jobs.enqueue([job])
    return job.id


async def test_checkpoints_are_kept_replaced_and_read_back(storage: Storage) -> None:
    job_id = await a_job(storage)
    await storage.jobs.checkpoint(job_id, point("2", {"message_id": "<a@b>", "n": [1, 2]}))
    await storage.jobs.checkpoint(job_id, point("3.1", kept=False))
    await storage.jobs.checkpoint(job_id, point("2", {"message_id": "<c@d>"}))
    found = {c.place: c for c in await storage.jobs.checkpoints(job_id)}
    assert set(found) == {"2", "3.1"}
    assert found["2"].result == {"message_id": "<c@d>"} and found["2"].kept
    assert found["2"].action == "send_email" and found["2"].step_id == "mail"
    assert found["2"].at == T0 and found["2"].run_id == "run1"
    assert not found["3.1"].kept and found["3.1"].result is None
    assert await storage.jobs.checkpoints("no-such-job") == []


async def test_a_checkpoint_survives_the_rollback_of_the_callers_transaction(
        storage: Storage) -> None:
    job_id = await a_job(storage)
    other = Job(id=new_id(T0), workflow="other", source="schedule", due_at=T0)
    unit = storage.begin(10)
    try:
        await storage.jobs.enqueue([other])  # the transaction holds a write (the writer)
        await storage.jobs.checkpoint(job_id, point("1", {"ok": True}))
    finally:
        await unit.rollback()
    assert await storage.jobs.get_job(other.id) is None
    # On SQLite it was queued behind the transaction, which held the writer: it commits
    # once the transaction ended.
    deadline = asyncio.get_running_loop().time() + 5
    while not (found := await storage.jobs.checkpoints(job_id)):
        assert asyncio.get_running_loop().time() < deadline, "the checkpoint never committed"
        await asyncio.sleep(0.01)
    assert [(c.place, c.result) for c in found] == [("1", {"ok": True})]


async def test_forgetting_from_a_step_takes_its_nested_places_and_later_ones(
        storage: Storage) -> None:
    job_id = await a_job(storage)
    for place in ("1", "2", "3", "3.2", "10"):
        await storage.jobs.checkpoint(job_id, point(place))
    assert await storage.jobs.forget_checkpoints(job_id, 3) == 3
    assert sorted(c.place for c in await storage.jobs.checkpoints(job_id)) == ["1", "2"]
    assert await storage.jobs.forget_checkpoints(job_id, 1) == 2
    assert await storage.jobs.checkpoints(job_id) == []


async def test_purge_takes_old_checkpoints_and_those_of_done_jobs(storage: Storage) -> None:
    failed, done = await a_job(storage), await a_job(storage)
    claimed = await storage.jobs.claim("w", T0, T0 + timedelta(minutes=1), 10)
    assert {j.id for j in claimed} == {failed, done}
    assert await storage.jobs.finish(failed, "w", "failed", T0, "r1", "boom")
    assert await storage.jobs.finish(done, "w", "done", T0, "r2")
    await storage.jobs.checkpoint(failed, point("1", at=T0 + timedelta(days=1)))
    await storage.jobs.checkpoint(failed, point("2", at=T0))
    await storage.jobs.checkpoint(done, point("1", at=T0 + timedelta(days=1)))
    assert await storage.jobs.purge_checkpoints(T0 + timedelta(hours=1)) == 2
    assert [c.place for c in await storage.jobs.checkpoints(failed)] == ["1"]
    assert await storage.jobs.checkpoints(done) == []


async def test_the_retention_pass_keeps_checkpoints_as_long_as_failed_runs(
        storage: Storage) -> None:
    job_id = await a_job(storage)  # pending: a retry could use them
    settings = Settings(run_retention=timedelta(days=1), failed_run_retention=timedelta(days=3))
    await storage.jobs.checkpoint(job_id, point("1", at=T0))
    await storage.jobs.checkpoint(job_id, point("2", at=T0 + timedelta(days=2)))
    assert await purge_checkpoints_once(storage, settings, lambda: T0 + timedelta(days=4)) == 1
    assert [c.place for c in await storage.jobs.checkpoints(job_id)] == ["2"]


async def test_a_retry_from_a_step_refused_forgets_nothing(storage: Storage) -> None:
    """A failed job whose singleton key another job holds is not retried, and its
    checkpoints stay (a later resume restores them); once the key is free, the retry from
    step 2 forgets steps 2 and later with it, in one go."""
    jobs = storage.jobs
    await jobs.enqueue([Job("held", "w", "schedule", T0, data={"params": {}},
                            single_key="w:k")])
    assert [j.id for j in await jobs.claim("worker", T0, T0 + timedelta(minutes=5), 1)] == [
        "held"]
    assert await jobs.finish("held", "worker", "failed", T0, None, "boom")
    for place in ("1", "2", "3"):
        await jobs.checkpoint("held", point(place))
    await jobs.enqueue([Job("other", "w", "schedule", T0, data={"params": {}},
                            single_key="w:k")])
    assert not await jobs.retry("held", T0, from_step=2)
    assert [c.place for c in await jobs.checkpoints("held")] == ["1", "2", "3"]
    assert await jobs.cancel(["other"], T0) == 1
    assert await jobs.retry("held", T0, from_step=2)
    assert [c.place for c in await jobs.checkpoints("held")] == ["1"]
