"""Recurring events run by a real `Scheduler` on a real store (SQLite and PostgreSQL), its
clock injected and set by the test, one pass at a time (plan, claim, run): ticks come on
time (`every: 1s` once a second), missed ticks follow `misfire` exactly, a backward clock
step stalls nothing, and a clock behind another instance's runs no tick twice; per-record
series (`set_recurring_event`) likewise, and they run as the user who set them. A record
has one series: its own tick can stop or replace it, a tick run again never forks it, and a
tick ends only with its next written (a database made to refuse shows it)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import Clock, run_sql

from gateway.compiler.loader import load
from gateway.runtime.context import ADMIN, Identity
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.model import Registry
from gateway.scheduler import Scheduler, with_jobs
from gateway.scheduler.planner import successor
from gateway.storage import Job, Storage, open_storage

TYPES = """
kind: data_type
name: mark
fields:
  due: {type: date}
  by: {type: text}
  name: {type: text}
---
kind: data_type
name: user
fields:
  name: {type: text}
"""

EVERY_SECOND = """
---
kind: recurring_event
name: second
every: 1s
misfire: {misfire}
steps:
  - {{action: create_thing, type: mark, fields: {{due: "{{{{ run.scheduled_at }}}}"}}}}
"""

EVERY_MINUTE = """
---
kind: recurring_event
name: minute
every: 1m
steps:
  - {{action: create_thing, type: mark, fields: {{due: "{{{{ run.scheduled_at }}}}"}}}}
"""

PER_RECORD = """
---
kind: recurring_event
name: daily
type: user
misfire: {misfire}
steps:
  - action: create_thing
    type: mark
    fields:
      due: "{{{{ run.scheduled_at }}}}"
      by: "{{{{ current_user._id if current_user else 'nobody' }}}}"
      name: "{{{{ current_user.name if current_user else '' }}}}"
---
kind: api_workflow
name: subscribe
auth: user
params:
  start: {{type: date}}
steps:
  - action: set_recurring_event
    event: daily
    thing: "{{{{ current_user._id }}}}"
    frequency: daily
    start: "{{{{ params.start }}}}"
"""

# PER_RECORD, whose tick also sets its own record's series: FREQUENCY from a week on.
SETS_ITS_OWN = PER_RECORD.replace("""
---
kind: api_workflow""", """
  - action: set_recurring_event
    event: daily
    thing: "{{{{ thing._id }}}}"
    frequency: FREQUENCY
    start: "{{{{ run.scheduled_at + days(7) }}}}"
---
kind: api_workflow""", 1)

TWICE = """
---
kind: api_workflow
name: twice
auth: admin
params:
  user: {{type: user}}
steps:
  - {{action: set_recurring_event, event: daily, thing: "{{{{ params.user }}}}", frequency: daily}}
  - {{action: set_recurring_event, event: daily, thing: "{{{{ params.user }}}}", frequency: weekly}}
"""

T = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
DAY = timedelta(days=1)


def registry(tmp_path: Path, document: str, misfire: str = "skip") -> Registry:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(TYPES).strip() + "\n" + document.format(misfire=misfire))
    return load([path])


@pytest.fixture
async def store(tmp_path: Path, storage_url: str) -> AsyncIterator[Storage]:
    storage = open_storage(storage_url)
    await storage.open(list(registry(tmp_path, EVERY_SECOND).data_types.values()))
    try:
        yield storage
    finally:
        await storage.close()


class Passes:
    """A scheduler whose passes the test makes, on the test's clock: each plans the
    recurring events (as the scheduler's loop does first), then claims what is due and
    waits for it to end."""

    def __init__(self, found: Registry, storage: Storage, clock: Clock) -> None:
        self.interpreter = with_jobs(Interpreter(found, storage, clock))
        self.scheduler = Scheduler(self.interpreter, storage, clock)

    async def run(self, count: int = 1) -> None:
        for _ in range(count):
            await self.scheduler.planner.plan(self.scheduler.registry.recurring.values())
            await self.scheduler.claim(10)
            await asyncio.gather(*list(self.scheduler.running.values()))


async def dues(storage: Storage) -> list[datetime]:
    return sorted(m["due"] for m in (await storage.records.search("mark")).results)


async def pending(storage: Storage, workflow: str) -> list[datetime]:
    return sorted(j.due_at for j in await storage.jobs.list_jobs("pending", workflow))


async def test_every_tickfires_once_a_second(tmp_path: Path, store: Storage) -> None:
    clock = Clock(T - S / 2)
    passes = Passes(registry(tmp_path, EVERY_SECOND), store, clock)
    await passes.run()
    assert await pending(store, "second") == [T]
    for second in range(3):
        clock.now = T + second * S
        await passes.run()
        # the next tick is written as the last one ends, not a poll later (when it would be
        # missed already): it runs when its second comes
        assert await pending(store, "second") == [T + (second + 1) * S]
    assert await dues(store) == [T, T + S, T + 2 * S]


async def test_skip_runs_no_missed_tick_and_the_next_on_time(tmp_path: Path,
                                                               store: Storage) -> None:
    found, clock = registry(tmp_path, EVERY_SECOND), Clock(T - S / 2)
    await Passes(found, store, clock).run()  # the tick of T is written; then nothing runs
    clock.now = T + 10.5 * S
    restarted = Passes(found, store, clock)
    await restarted.run(2)
    assert await dues(store) == []
    (missed,) = await store.jobs.list_jobs("cancelled", "second")
    assert missed.due_at == T and (missed.error or "").startswith("missed:")
    assert await pending(store, "second") == [T + 11 * S]
    clock.now = T + 11 * S
    await restarted.run()
    assert await dues(store) == [T + 11 * S]


async def test_run_once_runs_one_tick_for_all_missed_then_on_time(tmp_path: Path,
                                                                   store: Storage) -> None:
    found, clock = registry(tmp_path, EVERY_SECOND, "run_once"), Clock(T - S / 2)
    await Passes(found, store, clock).run()
    clock.now = T + 10.5 * S
    restarted = Passes(found, store, clock)
    await restarted.run(3)
    assert await dues(store) == [T + 10 * S]  # the latest missed, once
    assert await pending(store, "second") == [T + 11 * S]
    clock.now = T + 11 * S
    await restarted.run()
    assert await dues(store) == [T + 10 * S, T + 11 * S]


async def test_a_backward_clock_step_stalls_nothing(tmp_path: Path, store: Storage) -> None:
    clock = Clock(T - S / 2)
    passes = Passes(registry(tmp_path, EVERY_SECOND), store, clock)
    await passes.run()
    clock.now = T
    await passes.run()  # the tick of T runs; T + 1 s is written
    back = T - timedelta(hours=1)
    clock.now = back + S / 5  # the clock went back an hour
    await passes.run()
    assert await pending(store, "second") == [back + S, T + S]
    for second in (1, 2):
        clock.now = back + second * S
        await passes.run()
    assert await dues(store) == [back + S, back + 2 * S, T]
    clock.now = T + S  # caught up: the tick planned before the step runs, on time
    await passes.run()
    assert (await dues(store))[-1] == T + S


async def test_two_instances_whose_clocks_differ_run_each_tick_once(tmp_path: Path,
                                                                   store: Storage) -> None:
    found = registry(tmp_path, EVERY_MINUTE)
    ahead, behind = Clock(T - S / 2), Clock(T - 2 * S)
    first, second = Passes(found, store, ahead), Passes(found, store, behind)
    await first.run()
    for tick in range(3 * 60):  # each instance passes once a second (scheduler.poll)
        ahead.now = T + tick * S + S / 10
        behind.now = ahead.now - 1.5 * S  # 1.5 s behind: more than SKEW
        await first.run()
        await second.run()
    # right after the first planned the next minute's tick, the second's clock is still in
    # the minute before: that tick looks two minutes ahead, and is no clock step of its own
    assert await dues(store) == [T, T + 60 * S, T + 120 * S]


async def subscribe(found: Registry, storage: Storage, clock: Clock, start: datetime,
                    name: str = "Ada") -> str:
    """A user who starts their own daily series at `start`; the user's id."""
    user = await storage.records.create("user", {"name": name})
    record = await storage.records.get("user", user.id)
    interpreter = with_jobs(Interpreter(found, storage, clock))
    result = await interpreter.run(found.workflows["subscribe"], {"start": start.isoformat()},
                                   identity=Identity("user", user.id, user=record))
    assert result.error is None, result.error
    return user.id


async def test_a_series_skips_its_missed_ticks_and_goes_on_on_time(tmp_path: Path,
                                                                    store: Storage) -> None:
    found, clock = registry(tmp_path, PER_RECORD), Clock(T - S)
    await subscribe(found, store, clock, T)
    clock.now = T
    await Passes(found, store, clock).run()
    assert await pending(store, "daily") == [T + DAY]
    clock.now = T + 3 * DAY + timedelta(hours=1)  # down for three days
    restarted = Passes(found, store, clock)
    await restarted.run(2)
    assert await dues(store) == [T]
    assert await pending(store, "daily") == [T + 4 * DAY]
    clock.now = T + 4 * DAY
    await restarted.run()
    assert await dues(store) == [T, T + 4 * DAY]


async def test_a_series_runs_once_for_its_missed_ticks(tmp_path: Path, store: Storage) -> None:
    found, clock = registry(tmp_path, PER_RECORD, "run_once"), Clock(T - S)
    await subscribe(found, store, clock, T)
    clock.now = T
    await Passes(found, store, clock).run()
    clock.now = T + 3 * DAY + timedelta(hours=1)
    restarted = Passes(found, store, clock)
    await restarted.run(3)
    assert await dues(store) == [T, T + 3 * DAY]
    assert await pending(store, "daily") == [T + 4 * DAY]


async def test_a_series_tick_planned_before_the_clock_went_back_is_planned_again(
        tmp_path: Path, store: Storage) -> None:
    found, clock = registry(tmp_path, PER_RECORD), Clock(T - S)
    await subscribe(found, store, clock, T)
    clock.now = T
    passes = Passes(found, store, clock)
    await passes.run()
    assert await pending(store, "daily") == [T + DAY]
    clock.now = T - 2 * DAY + timedelta(hours=1)  # the clock went back two days
    await passes.run()
    assert await pending(store, "daily") == [T - DAY]
    for day in (-1, 0, 1):
        clock.now = T + day * DAY
        await passes.run()
    assert await dues(store) == [T - DAY, T, T, T + DAY]
    assert await pending(store, "daily") == [T + 2 * DAY]


async def test_a_scheduler_that_starts_behind_another_runs_no_series_tick_again(
        tmp_path: Path, store: Storage) -> None:
    found, ahead = registry(tmp_path, PER_RECORD), Clock(T - S)
    await subscribe(found, store, ahead, T)
    ahead.now = T + S / 10
    await Passes(found, store, ahead).run()  # the tick of T runs; T + 1 day is planned
    behind = Clock(T - 2 * S)  # a scheduler starts on a machine whose clock is 2 s behind
    late = Passes(found, store, behind)
    await late.run()
    behind.now = T + S
    await late.run()
    assert await dues(store) == [T]
    assert await pending(store, "daily") == [T + DAY]


async def test_a_series_stopped_by_its_own_tick_stops(tmp_path: Path, store: Storage) -> None:
    found, clock = registry(tmp_path, SETS_ITS_OWN.replace("FREQUENCY", "none")), Clock(T - S)
    await subscribe(found, store, clock, T)
    passes = Passes(found, store, clock)
    for day in range(3):
        clock.now = T + day * DAY
        await passes.run()
    assert await dues(store) == [T]  # its first tick said `frequency: none`
    assert await pending(store, "daily") == []


async def test_a_series_replaced_by_its_own_tick_runs_alone(tmp_path: Path,
                                                            store: Storage) -> None:
    found, clock = registry(tmp_path, SETS_ITS_OWN.replace("FREQUENCY", "weekly")), Clock(T - S)
    await subscribe(found, store, clock, T)
    passes = Passes(found, store, clock)
    for day in range(15):
        clock.now = T + day * DAY
        await passes.run()
    # each tick starts a weekly series a week on, in the stead of its own: one tick a week
    assert await dues(store) == [T, T + 7 * DAY, T + 14 * DAY]
    assert await pending(store, "daily") == [T + 21 * DAY]


async def test_a_run_that_sets_a_series_twice_leaves_the_last(tmp_path: Path,
                                                               store: Storage) -> None:
    found, clock = registry(tmp_path, PER_RECORD + TWICE), Clock(T)
    user = await store.records.create("user", {"name": "Ada"})
    interpreter = with_jobs(Interpreter(found, store, clock))
    result = await interpreter.run(found.workflows["twice"], {"user": user.id}, identity=ADMIN)
    assert result.error is None, result.error
    (tick,) = await store.jobs.list_jobs("pending", "daily")
    assert tick.data["frequency"] == "weekly"


async def test_a_series_tick_run_again_is_followed_once(tmp_path: Path, store: Storage) -> None:
    found, clock = registry(tmp_path, PER_RECORD), Clock(T - S)
    await subscribe(found, store, clock, T)
    clock.now = T + 3 * DAY + timedelta(hours=1)  # down for three days: the tick of T missed
    passes = Passes(found, store, clock)
    await passes.run()
    (missed,) = await store.jobs.list_jobs("cancelled", "daily")
    assert await store.jobs.retry(missed.id, clock.now)  # `gateway jobs retry`: it runs now
    await passes.run()
    for day in range(4, 7):
        clock.now = T + day * DAY + timedelta(hours=2)
        await passes.run()
    # the retried tick ran, and was followed by the tick its miss planned, not by another
    assert await dues(store) == [T + 3 * DAY + timedelta(hours=1), T + 4 * DAY, T + 5 * DAY,
                                 T + 6 * DAY]
    assert await pending(store, "daily") == [T + 7 * DAY]


async def test_a_tick_whose_series_was_replaced_meanwhile_is_cancelled_not_run(
        tmp_path: Path, store: Storage) -> None:
    """A tick written while its record's series was being replaced (no lock orders the two,
    so that no run waits on another) is found out by the worker that claims it: cancelled,
    not run, and followed by nothing."""
    found, clock = registry(tmp_path, PER_RECORD), Clock(T - S)
    await subscribe(found, store, clock, T)
    run_sql(store.url, "UPDATE gateway_series SET series = 'its-replacement'")
    clock.now = T
    await Passes(found, store, clock).run()
    assert await dues(store) == []
    (cancelled,) = await store.jobs.list_jobs("cancelled", "daily")
    assert cancelled.error is not None and cancelled.error.startswith("replaced:")
    assert await pending(store, "daily") == []


# The database refuses every new job for a while (a full disk, say), and takes them again.
REFUSE = {
    "sqlite": ["CREATE TRIGGER refuse_jobs BEFORE INSERT ON gateway_jobs "
               "BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"],
    "postgresql": ["CREATE FUNCTION refuse_jobs() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RAISE EXCEPTION 'the disk is full'; END $$",
                   "CREATE TRIGGER refuse_jobs BEFORE INSERT ON gateway_jobs "
                   "FOR EACH ROW EXECUTE FUNCTION refuse_jobs()"],
}
ACCEPT = {"sqlite": ["DROP TRIGGER refuse_jobs"],
          "postgresql": ["DROP TRIGGER refuse_jobs ON gateway_jobs"]}


def refusing(storage: Storage, refuse: bool) -> None:
    backend = storage.url.partition(":")[0]
    run_sql(storage.url, *(REFUSE if refuse else ACCEPT)[backend])


async def test_a_tick_ends_only_with_its_series_next(tmp_path: Path, store: Storage) -> None:
    found, clock = registry(tmp_path, PER_RECORD), Clock(T - S)
    await subscribe(found, store, clock, T)
    passes = Passes(found, store, clock)
    refusing(store, True)
    clock.now = T
    await passes.run()  # the tick runs; its next cannot be written
    (tick,) = await store.jobs.list_jobs(workflow="daily")
    assert tick.status == "running"  # not ended: neither its run's writes nor its end kept
    assert await dues(store) == []
    refusing(store, False)
    clock.now = T + passes.scheduler.lease + S  # its lease lapsed: claimed again, it runs
    await passes.run()
    for day in (1, 2, 3):
        clock.now = T + day * DAY
        await passes.run()
    assert await dues(store) == [T, T + DAY, T + 2 * DAY, T + 3 * DAY]
    assert await pending(store, "daily") == [T + 4 * DAY]


async def test_a_missed_tick_ends_only_with_the_tick_planned_in_its_stead(
        tmp_path: Path, store: Storage) -> None:
    found, clock = registry(tmp_path, PER_RECORD), Clock(T - S)
    await subscribe(found, store, clock, T)
    passes = Passes(found, store, clock)
    refusing(store, True)
    clock.now = T + 3 * DAY + timedelta(hours=1)  # down for three days: the tick of T missed
    await passes.run()
    (tick,) = await store.jobs.list_jobs(workflow="daily")
    assert tick.status == "running"  # not cancelled with nothing in its stead
    refusing(store, False)
    clock.now += passes.scheduler.lease + S  # its lease lapsed: claimed again, it runs late
    await passes.run(2)
    assert await dues(store) == [T]
    assert await pending(store, "daily") == [T + 4 * DAY]  # the series goes on, once


async def test_a_tick_s_templates_do_not_see_its_next(tmp_path: Path, store: Storage) -> None:
    shows_run = PER_RECORD.replace("current_user.name if current_user else ''",
                                   "run | sort | join(',')")
    found, clock = registry(tmp_path, shows_run), Clock(T - S)
    await subscribe(found, store, clock, T)
    clock.now = T
    await Passes(found, store, clock).run()
    (mark,) = (await store.records.search("mark")).results
    assert mark["name"] == "attempt,claim,depth,id,job,scheduled_at,source,workflow"
    assert await pending(store, "daily") == [T + DAY]


def test_a_tick_run_again_is_followed_by_the_tick_that_followed_it() -> None:
    tick = Job("t-1", "daily", "recurring", T, subject="r1", attempt=1,
               data={"frequency": "daily", "series": "s-1"})
    retried = replace(tick, due_at=T + timedelta(hours=5), attempt=2)  # its retry, later
    first, again = successor(tick, T + DAY, T), successor(retried, T + DAY + timedelta(hours=5), T)
    assert first.unique_key == again.unique_key == "recurring:daily:r1:s-1:after:t-1"
    assert first.data["series"] == "s-1" and first.subject == "r1"


async def test_a_series_runs_as_the_user_who_set_it(tmp_path: Path, store: Storage) -> None:
    found, clock = registry(tmp_path, PER_RECORD), Clock(T - S)
    user = await subscribe(found, store, clock, T)
    await store.records.update("user", user, {"name": "Ada L."})  # as their current record
    clock.now = T
    await Passes(found, store, clock).run()
    (mark,) = (await store.records.search("mark")).results
    assert (mark["by"], mark["name"]) == (user, "Ada L.")
    (tick,) = await store.jobs.list_jobs("done", "daily")
    run = await _run(store, tick.run_id)
    assert run["identity"] == {"kind": "user", "user_id": user}
    assert run["source"] == "recurring"


async def test_a_global_event_runs_as_admin(tmp_path: Path, store: Storage) -> None:
    clock = Clock(T - S / 2)
    passes = Passes(registry(tmp_path, EVERY_SECOND), store, clock)
    await passes.run()
    clock.now = T
    await passes.run()
    (tick,) = await store.jobs.list_jobs("done", "second")
    assert (await _run(store, tick.run_id))["identity"] == dict(ADMIN.record)


async def _run(storage: Storage, run_id: str | None) -> dict[str, Any]:
    assert run_id is not None
    await storage.runs.flush_runs()
    run = await storage.runs.get_run(run_id)
    assert run is not None
    return run
