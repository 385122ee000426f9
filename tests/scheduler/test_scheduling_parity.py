"""Scheduling as Bubble has it, on SQLite and PostgreSQL: a custom event scheduled with a
delay, privacy rules ignored by a scheduling or triggering step, every scheduled job of one
workflow cancelled, a job whose definition changed before it ran, and a per-record
recurring event set again with a start before its next run."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.compiler.loader import load
from gateway.runtime.context import ADMIN, Identity
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.model import Registry
from gateway.scheduler import Scheduler, with_jobs
from gateway.storage import Job, Storage, open_storage

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

CONFIG = """
kind: data_type
name: note
fields:
  text: {type: text}
  owner: {type: text}
privacy:
  - name: owners
    when: "{{ thing.owner == current_user._id }}"
    find_in_searches: true
    view_fields: all
everyone_else: {find_in_searches: false}
---
kind: data_type
name: seen
fields:
  count: {type: number}
  by: {type: text}
---
kind: custom_event
name: count-notes
params:
  by: {type: text}
returns:
  count: {type: number}
steps:
  - id: found
    action: search
    type: note
  - action: create_thing
    type: seen
    fields: {count: "{{ steps.found.count }}", by: "{{ params.by }}"}
  - action: return_data
    data: {count: "{{ steps.found.count }}"}
---
kind: api_workflow
name: later
auth: user
params:
  privileged: {type: boolean, optional: true, default: false}
steps:
  - id: plain
    action: schedule_workflow
    event: count-notes
    delay: 5m
    params: {by: plain}
  - id: wide
    action: schedule_workflow
    event: count-notes
    delay: 5m
    params: {by: wide}
    ignore_privacy_rules: true
  - id: now
    action: trigger_event
    event: count-notes
    params: {by: inline}
  - id: now_wide
    action: trigger_event
    event: count-notes
    params: {by: inline-wide}
    ignore_privacy_rules: true
  - action: return_data
    data: {ids: ["{{ steps.plain.id }}", "{{ steps.wide.id }}"],
           inline: "{{ steps.now.count }}", wide: "{{ steps.now_wide.count }}"}
---
kind: api_workflow
name: ping
auth: admin
params:
  n: {type: number, optional: true}
steps:
  - action: terminate
---
kind: api_workflow
name: schedule-pings
auth: admin
steps:
  - {action: schedule_workflow, workflow: ping, delay: 1h, params: {n: 1}}
  - {action: schedule_workflow, workflow: ping, delay: 2h, params: {n: 2}}
---
kind: api_workflow
name: stop-pings
auth: admin
params:
  again: {type: boolean, optional: true, default: false}
steps:
  - {action: schedule_workflow, workflow: ping, delay: 3h, only_when: "{{ params.again }}"}
  - id: stop
    action: cancel_all_scheduled
    workflow: ping
  - action: return_data
    data: {cancelled: "{{ steps.stop.cancelled }}"}
"""


@pytest.fixture
async def store(storage_url: str) -> AsyncIterator[Storage]:
    storage = open_storage(storage_url)
    try:
        yield storage
    finally:
        await storage.close()


def _registry(tmp_path: Path, extra: str = "", name: str = "wf.yaml") -> Registry:
    path = tmp_path / name
    path.write_text(textwrap.dedent(CONFIG).strip() + extra)
    return load([path])


async def _opened(storage: Storage, registry: Registry) -> None:
    await storage.open(list(registry.data_types.values()))


async def _run_due(registry: Registry, storage: Storage, at: datetime) -> None:
    """Claim and run every job due at `at`, one by one, with `registry`."""
    scheduler = Scheduler(with_jobs(Interpreter(registry, storage, lambda: at)), storage,
                          lambda: at)
    for job in await storage.jobs.claim(scheduler.worker, at, at + timedelta(minutes=1), 100):
        await scheduler.execute(job)


async def _get(storage: Storage, job_id: str) -> Job:
    job = await storage.jobs.get_job(job_id)
    assert job is not None
    return job


async def _run_log(storage: Storage, run_id: str | None) -> dict[str, Any]:
    assert run_id is not None
    await storage.runs.flush_runs()
    run = await storage.runs.get_run(run_id)
    assert run is not None
    return run


async def test_a_custom_event_is_scheduled_with_a_delay_and_privacy_is_ignored_when_said(
        tmp_path: Path, store: Storage) -> None:
    registry = _registry(tmp_path)
    await _opened(store, registry)
    ada = (await store.records.create("user", {"email": "ada@example.com"})).after
    assert ada is not None
    await store.records.create("note", {"text": "hers", "owner": ada["_id"]})
    await store.records.create("note", {"text": "other", "owner": "someone"})
    interpreter = with_jobs(Interpreter(registry, store, lambda: START))
    result = await interpreter.run(registry.workflows["later"], {},
                                   identity=Identity("user", ada["_id"], user=dict(ada)))
    assert result.error is None, result.error
    data = result.reply.data
    assert (data["inline"], data["wide"]) == (1, 2)  # trigger_event: as the caller, or not
    plain, wide = [await _get(store, i) for i in data["ids"]]
    assert plain.due_at == START + timedelta(minutes=5) and plain.data["event"] is True
    assert "ignore_privacy_rules" not in plain.data and wide.data["ignore_privacy_rules"]
    await _run_due(registry, store, START + timedelta(minutes=1))
    assert (await _get(store, plain.id)).status == "pending"  # not due yet
    await _run_due(registry, store, START + timedelta(minutes=6))
    counts = {}
    for job in (plain, wide):
        ended = await _get(store, job.id)
        assert ended.status == "done", ended.error
        run = await _run_log(store, ended.run_id)
        assert run["workflow"] == "count-notes" and run["source"] == "schedule"
        assert run["identity"] == {"kind": "user", "user_id": ada["_id"],
                                   "email": ada["email"]}
        counts[job.data["params"]["by"]] = run["result"]["count"]
    assert counts == {"plain": 1, "wide": 2}


async def test_a_scheduled_custom_event_s_params_are_checked_at_load_time(
        tmp_path: Path) -> None:
    from gateway.compiler.loader import check
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(CONFIG).strip() + """
---
kind: api_workflow
name: wrong
auth: admin
steps:
  - {action: schedule_workflow, event: count-notes, delay: 1m, params: {who: x}}
  - {action: schedule_workflow, event: no-such-event}
  - {action: cancel_all_scheduled, workflow: no-such-workflow}
""")
    _, problems = check([path])
    codes = sorted(p.code for p in problems if p.severity == "error")
    assert codes == ["ref.missing-event-param", "ref.unknown-event",
                     "ref.unknown-event-param", "ref.unknown-workflow"], problems


async def test_cancel_all_scheduled_cancels_one_workflow_s_pending_jobs_only(
        tmp_path: Path, store: Storage) -> None:
    registry = _registry(tmp_path)
    await _opened(store, registry)
    interpreter = with_jobs(Interpreter(registry, store, lambda: START))
    for _ in range(2):
        assert (await interpreter.run(registry.workflows["schedule-pings"], {},
                                      identity=ADMIN)).error is None
    other = Job("other-1", "later", "schedule", START + timedelta(hours=1))
    await store.jobs.enqueue([other])
    stop = await interpreter.run(registry.workflows["stop-pings"], {"again": True},
                                 identity=ADMIN)
    assert stop.error is None and stop.reply.data == {"cancelled": 5}  # 4 written, 1 unwritten
    pending = await store.jobs.list_jobs(status="pending", limit=100)
    assert [j.id for j in pending] == ["other-1"]
    again = await interpreter.run(registry.workflows["stop-pings"], {}, identity=ADMIN)
    assert again.reply.data == {"cancelled": 0}
    # A name no job has (a workflow that does not exist) cancels nothing, and says so.
    assert await store.jobs.cancel_workflow("no-such-workflow", START) == 0
    assert await store.jobs.cancel_workflow("", START) == 0
    assert await store.jobs.cancel_workflow("'; DROP TABLE gateway_jobs; --", START) == 0
    assert (await _get(store, "other-1")).status == "pending"


async def test_a_job_whose_definition_changed_says_which_version_it_ran(
        tmp_path: Path, store: Storage) -> None:
    registry = _registry(tmp_path)
    await _opened(store, registry)
    interpreter = with_jobs(Interpreter(registry, store, lambda: START))
    assert (await interpreter.run(registry.workflows["schedule-pings"], {},
                                  identity=ADMIN)).error is None
    before = registry.workflows["ping"].version
    (first, second) = sorted(await store.jobs.list_jobs(status="pending", limit=10),
                             key=lambda j: j.due_at)
    assert first.data["version"] == second.data["version"] == before
    # The config is reloaded between the scheduling and the runs: ping changed.
    reloaded = _registry(tmp_path, extra="", name="wf.yaml")
    path = tmp_path / "wf.yaml"
    path.write_text(path.read_text().replace(
        "name: ping\nauth: admin", "name: ping\nlabel: Ping again\nauth: admin"))
    reloaded = load([path])
    after = reloaded.workflows["ping"].version
    assert after != before
    await _run_due(registry, store, START + timedelta(hours=1))  # the same definition
    await _run_due(reloaded, store, START + timedelta(hours=2))  # a newer one
    same, newer = await _get(store, first.id), await _get(store, second.id)
    assert "remark" not in await _run_log(store, same.run_id)
    remark = (await _run_log(store, newer.run_id))["remark"]
    assert remark == (f"scheduled under version {before} of the definition of 'ping'; "
                      f"ran version {after} (the definition changed in between)")


RECURRING = """
---
kind: recurring_event
name: check-note
type: note
steps:
  - action: create_thing
    type: seen
    fields: {by: "{{ thing._id }}"}
---
kind: api_workflow
name: watch
auth: admin
params:
  note: {type: note}
  start: {type: date}
steps:
  - id: set
    action: set_recurring_event
    event: check-note
    thing: "{{ params.note }}"
    frequency: weekly
    start: "{{ params.start }}"
  - action: return_data
    data: {set: "{{ steps.set }}"}
"""


async def test_setting_a_series_again_with_an_earlier_start_replaces_its_next_run(
        tmp_path: Path, store: Storage) -> None:
    registry = _registry(tmp_path, RECURRING)
    await _opened(store, registry)
    note = await store.records.create("note", {"text": "x"})
    interpreter = with_jobs(Interpreter(registry, store, lambda: START))
    watch = registry.workflows["watch"]

    async def watch_from(start: datetime) -> Any:
        result = await interpreter.run(watch, {"note": note.id, "start": start.isoformat()},
                                       identity=ADMIN)
        assert result.error is None, result.error
        return result.reply.data["set"]

    await watch_from(START + timedelta(days=3))
    # Set again with a start before that next run: the new start is the next run (the
    # series is replaced at once), not the old one's.
    assert (await watch_from(START + timedelta(days=1)))["next"] == START + timedelta(days=1)
    pending = await store.jobs.list_jobs(status="pending", workflow="check-note")
    assert [j.due_at for j in pending] == [START + timedelta(days=1)]
    # A start in the past runs once now, as a past date does for schedule_workflow: the
    # weeks missed since are not caught up.
    assert (await watch_from(START - timedelta(weeks=3)))["next"] == START
    pending = await store.jobs.list_jobs(status="pending", workflow="check-note")
    assert [j.due_at for j in pending] == [START]
    await _run_due(registry, store, START)
    pending = await store.jobs.list_jobs(status="pending", workflow="check-note")
    assert [j.due_at for j in pending] == [START + timedelta(weeks=1)]
