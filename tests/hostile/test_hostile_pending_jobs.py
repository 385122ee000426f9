"""Pending jobs are bounded, on both backends: one request could create 100,000 jobs and
nothing bounded how many waited. Past `limits.max_pending_jobs_per_workflow` (for a workflow
a run adds jobs to) or `limits.max_pending_jobs` (in all), the run fails with 503
TOO_MANY_JOBS and its transaction rolls back whole: no job of it, no record it wrote. The
bound is read from counts the database keeps as jobs change status, not by counting jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from conftest import Serve

from gateway.core.errors import TooManyJobsError
from gateway.storage import Storage, open_storage
from gateway.storage.contract import Job, PendingBound
from gateway.storage.postgresql.job_store import COMPACT_ROWS

CONFIG = """
kind: settings
limits: {max_pending_jobs: 12, max_pending_jobs_per_workflow: 5}
---
kind: data_type
name: thing
fields: {name: {type: text}}
---
kind: data_type
name: note
fields: {name: {type: text}}
---
kind: api_workflow
name: make-things
expose: true
auth: none
params:
  count: {type: integer}
steps:
  - action: create_thing
    type: thing
    fields: {name: first}
    only_when: "{{ params.count > 0 }}"
  - action: create_thing
    type: thing
    fields: {name: "second"}
    only_when: "{{ params.count > 1 }}"
"""
WORKERS = ("work", "work2", "work3")
WORKER = """
---
kind: api_workflow
name: {name}
auth: admin
params:
  note: {{type: text}}
steps:
  - action: return_data
    data: {{note: "{{{{ params.note }}}}"}}
---
kind: api_workflow
name: fan-out-{name}
expose: true
auth: none
params:
  items: {{type: text, list: true}}
steps:
  - action: create_thing
    type: note
    fields: {{name: {name}}}
  - action: schedule_workflow_on_list
    workflow: {name}
    list: "{{{{ params.items }}}}"
    item_param: note
    delay: 1h
"""
TRIGGER = """
---
kind: database_trigger
name: thing-made
type: thing
events: [create]
steps:
  - action: return_data
    data: {}
"""


@pytest.fixture
async def gateway(serve: Serve, storage_url: str
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, Storage]]:
    """The app, its scheduler off, so that every job stays pending."""
    text = CONFIG + "".join(WORKER.format(name=n) for n in WORKERS)
    async with serve(text + TRIGGER, storage_url, scheduler=False) as served:
        yield served.client, served.storage


async def fan_out(http: httpx.AsyncClient, count: int, to: str = "work") -> httpx.Response:
    return await http.post(f"/api/1.1/wf/fan-out-{to}",
                           json={"items": [f"n{i}" for i in range(count)]})


async def pending(storage: Storage, workflow: str) -> int:
    return len(await storage.jobs.list_jobs(status="pending", workflow=workflow, limit=10_000))


async def records(storage: Storage, type: str) -> int:
    return (await storage.records.search(type)).count


def refused(response: httpx.Response, setting: str) -> None:
    body = response.json()["body"]
    assert (response.status_code, body["status"]) == (503, "TOO_MANY_JOBS"), body
    assert setting in body["message"] and "nothing this run did was kept" in body["message"]


async def test_past_the_bound_of_a_workflow_the_run_fails_and_keeps_nothing(
        gateway: tuple[httpx.AsyncClient, Storage]) -> None:
    http, storage = gateway
    assert (await fan_out(http, 5)).status_code == 200
    one_more = await fan_out(http, 1)
    refused(one_more, "limits.max_pending_jobs_per_workflow")
    assert await pending(storage, "work") == 5
    assert await records(storage, "note") == 1  # the refused run's record went with it
    await storage.runs.flush_runs()
    run = await storage.runs.get_run(one_more.headers["x-run-id"])
    assert run is not None and run["status"] == "failed"
    assert (await fan_out(http, 5, "work2")).status_code == 200  # another workflow's own bound


async def test_one_request_over_the_bound_schedules_nothing(
        gateway: tuple[httpx.AsyncClient, Storage]) -> None:
    """The issue's 100,000 jobs from one request, scaled down: refused whole."""
    http, storage = gateway
    refused(await fan_out(http, 1000), "limits.max_pending_jobs_per_workflow")
    assert await pending(storage, "work") == 0 and await records(storage, "note") == 0


async def test_past_the_global_bound_every_workflow_is_refused(
        gateway: tuple[httpx.AsyncClient, Storage]) -> None:
    http, storage = gateway
    assert (await fan_out(http, 5)).status_code == 200
    assert (await fan_out(http, 5, "work2")).status_code == 200
    assert (await fan_out(http, 2, "work3")).status_code == 200  # 12: at the bound
    refused(await fan_out(http, 1, "work3"), "limits.max_pending_jobs")
    assert [await pending(storage, w) for w in WORKERS] == [5, 5, 2]


async def test_database_trigger_jobs_count_against_the_bound(
        gateway: tuple[httpx.AsyncClient, Storage]) -> None:
    http, storage = gateway
    for _ in range(2):
        made = await http.post("/api/1.1/wf/make-things", json={"count": 2})
        assert made.status_code == 200
    refused(await http.post("/api/1.1/wf/make-things", json={"count": 2}),
            "limits.max_pending_jobs_per_workflow")  # 6 trigger runs would wait
    assert await pending(storage, "thing-made") == 4 and await records(storage, "thing") == 4


# --- the counts follow every change of a job's status (the job store itself) ---------------


NOW = datetime(2024, 5, 1, tzinfo=UTC)
BOUND = PendingBound(most=None, per_workflow=3)


def jobs(count: int, workflow: str = "w", start: int = 0) -> list[Job]:
    return [Job(id=f"{workflow}-{start + i:05d}", workflow=workflow, source="schedule",
                due_at=NOW, created_at=NOW) for i in range(count)]


async def test_jobs_that_leave_pending_make_room_and_those_back_take_it(
        storage: Storage) -> None:
    assert len(await storage.jobs.enqueue(jobs(3), BOUND)) == 3
    with pytest.raises(TooManyJobsError):
        await storage.jobs.enqueue(jobs(1, start=3), BOUND)
    assert await storage.jobs.get_job("w-00003") is None  # refused: not written
    await storage.jobs.cancel(["w-00000"], NOW)
    claimed = await storage.jobs.claim("worker", NOW, NOW + timedelta(minutes=1), 1)
    assert len(claimed) == 1
    assert len(await storage.jobs.enqueue(jobs(2, start=3), BOUND)) == 2  # two left pending
    with pytest.raises(TooManyJobsError):
        await storage.jobs.enqueue(jobs(1, start=5), BOUND)
    await storage.jobs.release("worker", [claimed[0].id])  # pending again: 4 of 3
    with pytest.raises(TooManyJobsError):
        await storage.jobs.enqueue(jobs(1, start=5), BOUND)
    assert await storage.jobs.retry("w-00000", NOW)  # pending again: 5
    assert len(await storage.jobs.list_jobs(status="pending", limit=100)) == 5
    assert len(await storage.jobs.enqueue(jobs(2, workflow="v"), BOUND)) == 2
    assert len(await storage.jobs.enqueue(jobs(1, start=9), None)) == 1  # no bound asked


async def test_a_duplicate_unique_key_adds_nothing_to_the_count(storage: Storage) -> None:
    tick = [Job(id="t-1", workflow="w", source="recurring", due_at=NOW, unique_key="k")]
    again = [Job(id="t-2", workflow="w", source="recurring", due_at=NOW, unique_key="k")]
    assert await storage.jobs.enqueue(tick, BOUND) == ["t-1"]
    for _ in range(5):
        assert await storage.jobs.enqueue(again, BOUND) == []
    assert len(await storage.jobs.enqueue(jobs(2), BOUND)) == 2  # 3 pending: at the bound


async def test_the_postgresql_tally_is_folded_as_it_grows(postgres_url: str) -> None:
    """On PostgreSQL each statement that changes jobs appends to a tally: the enqueue that
    finds it long folds it into a row per workflow, and the counts stay right."""
    storage = open_storage(postgres_url)
    await storage.open()
    try:
        bound = PendingBound(most=None, per_workflow=COMPACT_ROWS * 2)
        for number in range(COMPACT_ROWS + 50):
            await storage.jobs.enqueue(jobs(1, start=number), bound)
        with psycopg.connect(postgres_url) as conn:
            rows: Any = conn.execute(
                "SELECT count(*), sum(pending) FROM gateway_job_tally").fetchone()
        assert rows[0] < COMPACT_ROWS // 2 and rows[1] == COMPACT_ROWS + 50
        with pytest.raises(TooManyJobsError):
            await storage.jobs.enqueue(jobs(COMPACT_ROWS, start=5000), bound)
    finally:
        await storage.close()
