"""Hostile input to the scheduling steps, over HTTP, on both backends: what a caller sends
for dates, delays, lists, frequencies and ids is refused with 400 INVALID_DATA (recorded,
no job written), lists are bounded, and what a caller wrote reaches no log unescaped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from conftest import Serve

from gateway.storage import Storage

CONFIG = """
kind: settings
scheduler: {max_list: 50, poll: 50ms}
---
kind: data_type
name: thing
fields: {name: {type: text}}
---
kind: api_workflow
name: later
expose: true
auth: none
params:
  at: {type: text, optional: true}
  delay: {type: text, optional: true}
  items: {type: text, list: true, optional: true}
  interval: {type: text, optional: true}
  jobs: {type: object, optional: true}
  frequency: {type: text, optional: true}
  note: {type: text, optional: true, default: ""}
steps:
  - action: schedule_workflow
    only_when: "{{ params.at or params.delay }}"
    workflow: echo
    at: "{{ params.at }}"
    params: {note: "{{ params.note }}"}
  - action: schedule_workflow
    only_when: "{{ params.delay }}"
    workflow: echo
    delay: "{{ params.delay }}"
  - action: schedule_workflow_on_list
    only_when: "{{ params.items }}"
    workflow: echo
    list: "{{ params.items }}"
    item_param: note
    interval: "{{ params.interval or '0s' }}"
  - action: cancel_scheduled
    only_when: "{{ params.jobs }}"
    jobs: "{{ params.jobs.list }}"
  - id: thing
    action: create_thing
    only_when: "{{ params.frequency }}"
    type: thing
    fields: {name: x}
  - action: set_recurring_event
    only_when: "{{ params.frequency }}"
    event: daily-thing
    thing: "{{ steps.thing }}"
    frequency: "{{ params.frequency }}"
---
kind: api_workflow
name: plan-and-cancel
expose: true
auth: none
params:
  job: {type: text}
steps:
  - id: later
    action: schedule_workflow
    workflow: echo
    delay: 1h
  - id: many
    action: schedule_workflow_on_list
    workflow: echo
    list: "{{ ['a', 'b'] }}"
    item_param: note
  - id: stop_one
    action: cancel_scheduled
    job: "{{ steps.later }}"
  - id: stop_many
    action: cancel_scheduled
    jobs: "{{ steps.many }}"
  - id: stop_earlier
    action: cancel_scheduled
    job: "{{ params.job }}"
  - action: return_data
    data: {one: "{{ steps.stop_one.cancelled }}", many: "{{ steps.stop_many.cancelled }}",
           earlier: "{{ steps.stop_earlier.cancelled }}"}
---
kind: api_workflow
name: echo
auth: admin
params:
  note: {type: text, optional: true, default: ""}
steps:
  - action: fail
    status: 500
    code: ECHO
    message: "{{ params.note }}"
---
kind: recurring_event
name: daily-thing
type: thing
steps: [{action: terminate}]
"""


@pytest.fixture
async def gateway(serve: Serve, storage_url: str
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, Storage]]:
    async with serve(CONFIG, storage_url) as served:
        yield served.client, served.storage


async def call(http: httpx.AsyncClient, **params: Any) -> httpx.Response:
    return await http.post("/api/1.1/wf/later", json=params)


BAD = {
    "a date that is not one": {"at": "next tuesday\r\nINFO forged"},
    "a delay that is not one": {"delay": "5 fortnights"},
    "a negative delay": {"delay": "-5"},
    "a delay beyond any date": {"delay": "99999999999999d"},
    "a list over scheduler.max_list": {"items": [str(i) for i in range(51)]},
    "an interval that is not one": {"items": ["a"], "interval": "soon"},
    "jobs that are not a list": {"jobs": {"list": {"a": 1}}},
    "jobs that are not ids": {"jobs": {"list": [{"a": 1}]}},
    "an unknown frequency": {"frequency": "hourly\n"},
}


@pytest.mark.parametrize("params", BAD.values(), ids=list(BAD))
async def test_bad_values_are_400_recorded_and_leave_no_job(
        gateway: tuple[httpx.AsyncClient, Storage], params: dict[str, Any]) -> None:
    http, storage = gateway
    response = await call(http, **params)
    assert response.status_code == 400, response.text
    body = response.json()["body"]
    assert body["status"] == "INVALID_DATA"
    assert "\n" not in body["message"] and "\r" not in body["message"]
    assert len(body["message"]) < 300
    await storage.runs.flush_runs()
    (run,) = await storage.runs.list_runs(workflow="later")
    assert run["status"] == "rejected" and run["id"] == response.headers["x-run-id"]
    assert await storage.jobs.list_jobs(workflow="echo") == []


async def test_a_list_at_the_limit_is_written_in_one_go_and_unknown_ids_cancel_nothing(
        gateway: tuple[httpx.AsyncClient, Storage]) -> None:
    http, storage = gateway
    response = await call(http, items=[f"n{i}" for i in range(50)], interval="1h")
    assert response.status_code == 200, response.text
    assert len(await storage.jobs.list_jobs(workflow="echo", limit=100)) == 50
    cancelled = await call(http, jobs={"list": [f"{i}x1" for i in range(1000)]})
    assert cancelled.status_code == 200
    assert await storage.jobs.list_jobs(workflow="echo", status="cancelled") == []


async def test_a_cancel_step_is_named_by_its_id_and_its_result_read(
        gateway: tuple[httpx.AsyncClient, Storage]) -> None:
    http, storage = gateway
    assert (await call(http, at="2999-01-01T00:00:00Z")).status_code == 200
    (waiting,) = await storage.jobs.list_jobs(workflow="echo")
    response = await http.post("/api/1.1/wf/plan-and-cancel", json={"job": waiting.id})
    assert response.status_code == 200, response.text
    # This run's own jobs are cancelled before they are written; the earlier one in the store.
    assert response.json()["response"] == {"one": 1, "many": 2, "earlier": 1}
    (cancelled,) = await storage.jobs.list_jobs(workflow="echo", status="cancelled")
    assert cancelled.id == waiting.id
    assert await storage.jobs.list_jobs(workflow="echo", status="pending") == []


async def test_what_a_caller_wrote_reaches_the_scheduler_s_log_escaped(
        gateway: tuple[httpx.AsyncClient, Storage], caplog: pytest.LogCaptureFixture) -> None:
    http, storage = gateway
    caplog.set_level(logging.WARNING, logger="gateway.scheduler")
    forged = "boom\nCRITICAL gateway: forged line\x1b[31m"
    response = await call(http, at="2000-01-01T00:00:00Z", note=forged)
    assert response.status_code == 200, response.text
    async with asyncio.timeout(20):
        while not await storage.jobs.list_jobs(workflow="echo", status="failed"):
            await asyncio.sleep(0.02)
    (failed,) = await storage.jobs.list_jobs(workflow="echo", status="failed")
    assert failed.error == f"ECHO: {forged}"  # kept whole in the database, for the operator
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.scheduler"]
    assert any("forged line" in line for line in lines)
    assert all("\n" not in line and "\x1b" not in line for line in lines)
