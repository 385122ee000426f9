"""Backend workflows end to end, on SQLite and PostgreSQL: scheduled runs, retries, the
depth limit, database triggers and per-record recurring events, run by a real `Scheduler`
on a real store."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.compiler.loader import load
from gateway.core.clock import Clock, utc_now
from gateway.runtime.context import ADMIN, Identity
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.model import Registry
from gateway.runtime.origin import JobRun, Origin
from gateway.scheduler import Scheduler, with_jobs
from gateway.storage import Constraint, Job, Storage, open_storage

CONFIG = """
kind: settings
scheduler: {poll: 50ms, lease: 30s, max_depth: 3}
---
kind: data_type
name: lead
fields:
  name: {type: text}
  score: {type: number, default: 0}
  note: {type: text}
---
kind: data_type
name: audit
fields:
  lead: {type: text}
  before: {type: number}
  after: {type: number}
  by: {type: text}
  event: {type: text}
---
kind: api_workflow
name: signup
expose: true
auth: none
params:
  name: {type: text}
  fail: {type: boolean, optional: true, default: false}
steps:
  - id: lead
    action: create_thing
    type: lead
    fields: {name: "{{ params.name }}"}
  - id: job
    action: schedule_workflow
    workflow: welcome
    delay: 0s
    params: {lead: "{{ steps.lead }}"}
  - action: fail
    only_when: "{{ params.fail }}"
    message: "no"
  - action: return_data
    data: {job: "{{ steps.job.id }}", lead: "{{ steps.lead._id }}"}
---
kind: api_workflow
name: welcome
auth: admin
params:
  lead: {type: lead}
steps:
  - action: make_changes
    type: lead
    thing: "{{ params.lead }}"
    fields:
      note: "{{ run.source }} attempt {{ run.attempt }} job {{ run.job }} at {{ run.scheduled_at }}"
---
kind: api_workflow
name: flaky
auth: admin
retry: {max_attempts: 3, backoff: 0s, max_backoff: 0s}
steps:
  - action: fail
    status: 503
    code: DOWN
    message: "attempt {{ run.attempt }}"
---
kind: api_workflow
name: again
auth: admin
steps:
  - action: schedule_workflow
    workflow: again
---
kind: api_workflow
name: many
auth: admin
params:
  n: {type: integer}
steps:
  - id: found
    action: search
    type: lead
  - action: schedule_workflow_on_list
    workflow: welcome
    list: "{{ steps.found }}"
    item_param: lead
    interval: 1h
---
kind: api_workflow
name: touch
auth: none
params:
  lead: {type: text}
steps:
  - {action: make_changes, type: lead, thing: "{{ params.lead }}", fields: {score: 1}}
  - {action: make_changes, type: lead, thing: "{{ params.lead }}", fields: {score: 2}}
  - {action: make_changes, type: lead, thing: "{{ params.lead }}", fields: {name: same}}
---
kind: database_trigger
name: score-changed
type: lead
events: [change]
only_when: "{{ before.score != after.score }}"
steps:
  - action: create_thing
    type: audit
    fields:
      lead: "{{ after._id }}"
      before: "{{ before.score }}"
      after: "{{ after.score }}"
      by: "{{ current_user._id if current_user else 'nobody' }}"
  - action: make_changes
    type: lead
    thing: "{{ after._id }}"
    fields: {score: 100}
---
kind: database_trigger
name: lead-created
type: lead
events: [create]
steps:
  - {action: create_thing, type: audit, fields: {lead: "{{ after._id }}", event: created}}
---
kind: recurring_event
name: monthly-check
type: lead
steps:
  - {action: create_thing, type: audit, fields: {lead: "{{ thing._id }}", event: tick}}
"""


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(CONFIG).strip())
    return load([path])


@pytest.fixture
async def store(registry: Registry, storage_url: str) -> AsyncIterator[Storage]:
    storage = open_storage(storage_url)
    await storage.open(list(registry.data_types.values()))
    try:
        yield storage
    finally:
        await storage.close()


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    """Wait for a condition, polling, and say what was awaited if it never came."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)
    assert await check(), what


class Running:
    """A scheduler running in the background of a test."""

    def __init__(self, interpreter: Interpreter, storage: Storage,
                 clock: Clock = utc_now) -> None:
        self.stop = asyncio.Event()
        self.scheduler = Scheduler(interpreter, storage, clock)
        self.task = asyncio.create_task(self.scheduler.run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


async def jobs_of(storage: Storage, workflow: str, status: str | None = None) -> list[Job]:
    return await storage.jobs.list_jobs(status=status, workflow=workflow, limit=1000)


async def audits(storage: Storage, **equal: Any) -> list[dict[str, Any]]:
    page = await storage.records.search(
        "audit", [Constraint(k, "equals", v) for k, v in equal.items()])
    return page.results


async def test_a_scheduled_run_runs_with_what_it_knows_of_its_job(
        registry: Registry, store: Storage) -> None:
    interpreter = with_jobs(Interpreter(registry, store))
    result = await interpreter.run(registry.workflows["signup"], {"name": "Ada"})
    assert result.error is None and result.reply is not None
    job_id, lead = result.reply.data["job"], result.reply.data["lead"]
    running = Running(interpreter, store)
    try:
        await until("the job done", lambda: _status(store, job_id, "done"))
    finally:
        await running.close()
    record = await store.records.get("lead", lead)
    assert record is not None
    assert record["note"].startswith(f"schedule attempt 1 job {job_id} at 20")
    job = await store.jobs.get_job(job_id)
    assert job is not None and job.run_id is not None
    run = await _run(store, job.run_id)
    assert run["source"] == "schedule" and run["identity"] == {"kind": "anonymous",
                                                               "user_id": None}


async def _status(storage: Storage, job_id: str, status: str) -> bool:
    job = await storage.jobs.get_job(job_id)
    return job is not None and job.status == status


async def _run(storage: Storage, run_id: str) -> dict[str, Any]:
    await storage.runs.flush_runs()
    run = await storage.runs.get_run(run_id)
    assert run is not None
    return run


async def test_a_failed_run_leaves_no_job_behind(registry: Registry, store: Storage) -> None:
    interpreter = with_jobs(Interpreter(registry, store))
    result = await interpreter.run(registry.workflows["signup"], {"name": "Bo", "fail": True})
    assert result.error is not None
    assert await jobs_of(store, "welcome") == []
    # the record it created before failing stays (record writes are not rolled back) and
    # fired its trigger, which did not run either: a failed run commits no job at all
    assert await jobs_of(store, "lead-created") == []


async def test_a_failing_job_is_retried_then_stays_failed_with_every_attempt_logged(
        registry: Registry, store: Storage) -> None:
    interpreter = with_jobs(Interpreter(registry, store))
    await store.jobs.enqueue([Job("j-flaky", "flaky", "schedule", datetime.now(UTC),
                                  data={"identity": {"kind": "admin"}})])
    running = Running(interpreter, store)
    try:
        await until("the job failed", lambda: _status(store, "j-flaky", "failed"))
    finally:
        await running.close()
    job = await store.jobs.get_job("j-flaky")
    assert job is not None and job.attempt == 3 and job.error == "DOWN: attempt 3"
    await store.runs.flush_runs()
    runs = await store.runs.list_runs(workflow="flaky")
    assert sorted(r["error"]["message"] for r in runs) == [f"attempt {n}" for n in (1, 2, 3)]
    # Each run names its job and attempt: the console's job page lists exactly these.
    assert [(r["job"], r["attempt"]) for r in await store.runs.page_runs(job="j-flaky")] == [
        ("j-flaky", 3), ("j-flaky", 2), ("j-flaky", 1)]
    assert await store.jobs.retry("j-flaky", datetime.now(UTC))  # `gateway jobs retry`
    assert await _status(store, "j-flaky", "pending")


async def welcome_job(store: Storage, job_id: str, name: str) -> tuple[str, datetime]:
    """A lead, and a job due now that runs `welcome` for it: the lead's id and the time."""
    lead = await store.records.create("lead", {"name": name})
    now = datetime.now(UTC)
    await store.jobs.enqueue([Job(job_id, "welcome", "schedule", now, data={
        "params": {"lead": lead.id}, "identity": {"kind": "admin"}})])
    return lead.id, now


async def test_a_run_that_outlived_its_lease_writes_nothing_and_the_newer_claim_ends_it(
        registry: Registry, store: Storage) -> None:
    interpreter = with_jobs(Interpreter(registry, store))
    lead, now = await welcome_job(store, "j-late", "Cy")
    stalled = Scheduler(interpreter, store, worker="stalled")
    (first,) = await store.jobs.claim("stalled", now, now + timedelta(seconds=30), 10)
    # The stalled worker's lease expires before its run ends; another worker claims again.
    later = now + timedelta(minutes=1)
    other = Scheduler(interpreter, store, clock=lambda: later, worker="other")
    (second,) = await store.jobs.claim("other", later, later + timedelta(seconds=30), 10)
    assert (first.attempt, second.attempt) == (1, 2)

    await stalled.execute(first)  # its run writes, then finds its claim gone: rolled back
    unchanged = await store.records.get("lead", lead)
    assert unchanged is not None and unchanged.get("note") is None
    job = await store.jobs.get_job("j-late")
    assert job is not None and (job.status, job.worker) == ("running", "other")
    assert stalled.ended == {"lost": 1}

    await other.execute(second)
    done = await store.jobs.get_job("j-late")
    assert done is not None and done.status == "done" and done.attempt == 2
    final = await store.records.get("lead", lead)
    assert final is not None and final["note"].startswith("schedule attempt 2 job j-late")
    await store.runs.flush_runs()
    runs = await store.runs.page_runs(job="j-late")
    assert [(r["attempt"], r["status"], r["error"] and r["error"]["code"]) for r in runs] == [
        (2, "success", None), (1, "failed", "LEASE_LOST")]
    assert done.run_id == runs[0]["id"]


async def test_a_worker_that_claims_its_own_lapsed_job_again_keeps_renewing_the_new_claim(
        registry: Registry, store: Storage) -> None:
    interpreter = with_jobs(Interpreter(registry, store))
    _, now = await welcome_job(store, "j-again", "Ed")
    times = [now]
    scheduler = Scheduler(interpreter, store, clock=lambda: times[0], worker="w")
    (first,) = await store.jobs.claim("w", now, now + timedelta(seconds=30), 10)
    resumed = asyncio.Event()

    async def stalled() -> None:  # a run held up past its lease, then going on
        await resumed.wait()
        await scheduler._execute(first)

    stale = asyncio.create_task(stalled())  # as `claim` starts a run
    scheduler.running[first.id] = stale
    times[0] = now + timedelta(minutes=1)  # its lease lapsed: the same worker claims again
    assert await scheduler.claim(10) == 1
    resumed.set()
    newer = scheduler.running["j-again"]
    assert newer is not stale
    await stale  # rolled back (LEASE_LOST): the newer claim is still this worker's to renew
    entry = scheduler.running.get("j-again")
    assert entry is newer or (entry is None and newer.done())  # gone only once it ended
    await newer
    assert "j-again" not in scheduler.running and scheduler.ended == {"lost": 1, "done": 1}
    done = await store.jobs.get_job("j-again")
    assert done is not None and (done.status, done.attempt) == ("done", 2)


async def test_a_job_s_run_that_writes_ends_its_job_in_its_own_transaction(
        registry: Registry, store: Storage) -> None:
    """Not after it: a worker that dies (or fails to write the end) once the run committed
    leaves no job to run the same writes again."""
    interpreter = with_jobs(Interpreter(registry, store))
    lead, now = await welcome_job(store, "j-own", "Di")
    (job,) = await store.jobs.claim("w", now, now + timedelta(seconds=30), 10)
    result = await interpreter.run(registry.workflows["welcome"], {"lead": lead},
                                   origin=Origin("schedule", JobRun(job)), identity=ADMIN)
    assert result.error is None
    ended = await store.jobs.get_job("j-own")  # no `finish` was called
    assert ended is not None and (ended.status, ended.run_id) == ("done", result.run_id)
    # the same run once more (another worker, after a lost end) is refused
    again = await interpreter.run(registry.workflows["welcome"], {"lead": lead},
                                  origin=Origin("schedule", JobRun(job)), identity=ADMIN)
    assert again.error is not None and again.error.code == "LEASE_LOST"


async def test_recursive_scheduling_stops_at_the_depth_limit(registry: Registry,
                                                             store: Storage) -> None:
    interpreter = with_jobs(Interpreter(registry, store))
    result = await interpreter.run(registry.workflows["again"], {}, identity=ADMIN)
    assert result.error is None
    running = Running(interpreter, store)

    async def stopped() -> bool:
        return len(await jobs_of(store, "again", "failed")) == 1

    try:
        await until("the deepest run failed", stopped)
    finally:
        await running.close()
    assert len(await jobs_of(store, "again", "done")) == 2  # depths 1 and 2; 3 failed
    (failed,) = await jobs_of(store, "again", "failed")
    assert failed.error is not None and "scheduler.max_depth" in failed.error


async def test_schedule_on_a_list_writes_one_job_per_item_spaced_by_the_interval(
        registry: Registry, store: Storage) -> None:
    for name in "abc":
        await store.records.create("lead", {"name": name})
    interpreter = with_jobs(Interpreter(registry, store))
    result = await interpreter.run(registry.workflows["many"], {"n": 1}, identity=ADMIN)
    assert result.error is None
    jobs = sorted(await jobs_of(store, "welcome"), key=lambda j: j.due_at)
    assert len(jobs) == 3
    assert [j.due_at - jobs[0].due_at for j in jobs] == [timedelta(hours=h) for h in (0, 1, 2)]
    assert {j.data["params"]["lead"] for j in jobs} == {
        r["_id"] for r in (await store.records.search("lead")).results}
    assert await store.jobs.cancel([j.id for j in jobs], datetime.now(UTC)) == 3


async def test_a_trigger_fires_once_per_record_per_run_and_not_for_its_own_changes(
        registry: Registry, store: Storage) -> None:
    lead = await store.records.create("lead", {"name": "x"})
    interpreter = with_jobs(Interpreter(registry, store))
    user = Identity("user", "u-1")
    result = await interpreter.run(registry.workflows["touch"], {"lead": lead.id},
                                   identity=user)
    assert result.error is None
    (job,) = await jobs_of(store, "score-changed")
    assert job.data["before"]["score"] == 0 and job.data["after"]["score"] == 2
    running = Running(interpreter, store)
    try:
        await until("the trigger ran", lambda: _status(store, job.id, "done"))
    finally:
        await running.close()
    (audit,) = await audits(store, lead=lead.id)
    assert (audit["before"], audit["after"], audit["by"]) == (0, 2, "u-1")
    final = await store.records.get("lead", lead.id)
    assert final is not None and final["score"] == 100  # the trigger's change fired nothing
    assert len(await jobs_of(store, "score-changed")) == 1


async def test_a_trigger_whose_condition_is_false_costs_no_job(registry: Registry,
                                                                store: Storage) -> None:
    interpreter = with_jobs(Interpreter(registry, store))
    lead = await store.records.create("lead", {"name": "x", "score": 2})
    workflow = registry.workflows["touch"]
    # score goes 2 -> 1 -> 2: changed, but not from the trigger's point of view
    assert (await interpreter.run(workflow, {"lead": lead.id})).error is None
    assert await jobs_of(store, "score-changed") == []


async def test_a_per_record_recurring_event_runs_with_its_thing_and_schedules_the_next(
        registry: Registry, store: Storage) -> None:
    lead = await store.records.create("lead", {"name": "x"})
    start = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)
    first = Job("tick-1", "monthly-check", "recurring", start, subject=lead.id,
                unique_key=f"recurring:monthly-check:{lead.id}:1",
                data={"identity": {"kind": "admin"}, "frequency": "monthly", "series": "s"})
    await store.jobs.set_series("monthly-check", lead.id, "s", start)  # as the step does
    await store.jobs.enqueue([first])
    interpreter = with_jobs(Interpreter(registry, store))
    running = Running(interpreter, store, clock=lambda: start + timedelta(hours=1))
    try:
        await until("the tick ran", lambda: _status(store, "tick-1", "done"))
    finally:
        await running.close()
    assert [a["event"] for a in await audits(store, lead=lead.id)] == ["tick"]
    pending = await jobs_of(store, "monthly-check", "pending")
    assert [j.due_at for j in pending] == [datetime(2026, 2, 28, 9, 0, tzinfo=UTC)]


SET_RECURRING = """
---
kind: api_workflow
name: subscribe
auth: admin
params:
  lead: {type: lead}
  frequency: {type: text}
steps:
  - id: set
    action: set_recurring_event
    event: monthly-check
    thing: "{{ params.lead }}"
    frequency: "{{ params.frequency }}"
    start: "2030-01-31T09:00:00Z"
  - action: return_data
    data: {set: "{{ steps.set }}"}
---
kind: api_workflow
name: remove
auth: admin
params:
  lead: {type: lead}
steps:
  - {action: delete_thing, type: lead, thing: "{{ params.lead }}"}
---
kind: database_trigger
name: lead-deleted
type: lead
events: [delete]
steps:
  - {action: create_thing, type: audit, fields: {lead: "{{ before._id }}", event: deleted}}
"""


async def test_set_recurring_event_starts_changes_and_stops_one_record_s_schedule(
        tmp_path: Path, storage_url: str) -> None:
    path = tmp_path / "more.yaml"
    path.write_text(textwrap.dedent(CONFIG).strip() + SET_RECURRING)
    registry = load([path])
    storage = open_storage(storage_url)
    await storage.open(list(registry.data_types.values()))
    try:
        interpreter = with_jobs(Interpreter(registry, storage))
        lead = await storage.records.create("lead", {"name": "x"})
        subscribe = registry.workflows["subscribe"]
        for frequency in ("monthly", "weekly"):
            result = await interpreter.run(subscribe, {"lead": lead.id, "frequency": frequency},
                                           identity=ADMIN)
            assert result.error is None, result.error
        pending = await jobs_of(storage, "monthly-check", "pending")
        assert [(j.subject, j.data["frequency"]) for j in pending] == [(lead.id, "weekly")]
        assert pending[0].due_at == datetime(2030, 1, 31, 9, 0, tzinfo=UTC)
        stop = await interpreter.run(subscribe, {"lead": lead.id, "frequency": "none"},
                                     identity=ADMIN)
        assert stop.reply is not None and stop.reply.data == {"set": {"cancelled": 1}}
        assert await jobs_of(storage, "monthly-check", "pending") == []
        bad = await interpreter.run(subscribe, {"lead": lead.id, "frequency": "hourly"},
                                    identity=ADMIN)
        assert bad.error is not None and bad.error.code == "INVALID_DATA"
        removed = await interpreter.run(registry.workflows["remove"], {"lead": lead.id},
                                        identity=ADMIN)
        assert removed.error is None
        (deleted,) = await jobs_of(storage, "lead-deleted")
        assert deleted.data["after"] is None and deleted.data["before"]["_id"] == lead.id
    finally:
        await storage.close()
