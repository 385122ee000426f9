"""Throttle, debounce and singleton end to end, on SQLite and PostgreSQL: jobs scheduled by
runs get their keys from their workflow's flow control, and the scheduler (8 jobs at once)
starts at most `limit` jobs of a throttle key per period, in order; forty schedulings of
one debounce key make one run, with the last one's params; a singleton key already
waiting skips the job, and the scheduling run's log says so.

Each job calls a loopback server that notes, per key, when each call came: what a
throttle must bound is seen where it would hurt, at the upstream."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import json
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.compiler.loader import load
from gateway.core.settings import with_environment
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.model import Registry
from gateway.scheduler import Scheduler, with_jobs
from gateway.storage import Storage, open_storage

CONFIG = """
kind: settings
scheduler: {poll: 1s, lease: 30s, concurrency: 8}
secrets: [UPSTREAM]
run_log: {sample_success: 1}
---
kind: api_workflow
name: throttled
auth: admin
params:
  n: {type: integer}
  rec: {type: text}
  url: {type: text}
throttle: {key: "acct-{{ params.n % 2 }}", limit: 5, per: 1s}
steps:
  - action: http_request
    url: "{{ params.url }}/?key=acct-{{ params.n % 2 }}&n={{ params.n }}"
---
kind: api_workflow
name: debounced
auth: admin
params:
  n: {type: integer}
  rec: {type: text}
  url: {type: text}
debounce: {key: "{{ params.rec }}", period: 300ms}
steps:
  - action: http_request
    url: "{{ params.url }}/?key={{ params.rec }}&n={{ params.n }}"
---
kind: api_workflow
name: single
auth: admin
params:
  n: {type: integer}
  rec: {type: text}
  url: {type: text}
singleton: {key: "{{ params.rec }}"}
steps:
  - action: http_request
    url: "{{ params.url }}/?key={{ params.rec }}&n={{ params.n }}"
---
kind: data_type
name: contact
fields:
  n: {type: integer}
---
kind: api_workflow
name: edit
auth: admin
params:
  contact: {type: contact}
  n: {type: integer}
steps:
  - action: make_changes
    type: contact
    thing: "{{ params.contact }}"
    fields: {n: "{{ params.n }}"}
---
kind: database_trigger
name: contact-changed
type: contact
events: [change]
debounce: {key: "{{ after._id }}", period: 300ms}
steps:
  - action: http_request
    url: "{{ secrets.UPSTREAM }}/?key={{ after._id }}&n={{ after.n }}"
---
kind: api_workflow
name: drop
auth: admin
params:
  contact: {type: contact}
steps:
  - {action: delete_thing, type: contact, thing: "{{ params.contact }}"}
---
kind: database_trigger
name: contact-gone
type: contact
events: [create, delete]
throttle: {key: "{{ after._id }}", limit: 1, per: 1h}
steps: [{action: terminate}]
"""
# One workflow scheduling jobs of each (a step names the workflow it schedules).
PLAN = """
---
kind: api_workflow
name: plan-{name}
auth: admin
params:
  ns: {{type: integer, list: true}}
  rec: {{type: text, optional: true, default: r}}
  url: {{type: text}}
steps:
  - action: schedule_workflow_on_list
    workflow: {name}
    list: "{{{{ params.ns }}}}"
    item_param: n
    interval: 1ms
    params: {{url: "{{{{ params.url }}}}", rec: "{{{{ params.rec }}}}"}}
"""
WHOLE = CONFIG + "".join(PLAN.format(name=n) for n in ("throttled", "debounced", "single"))


class Upstream:
    """A loopback HTTP server that notes, per key (the `key` query parameter), when each
    call came (`times`, by the monotonic clock) and which `n` it carried (`ns`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self.ns: dict[str, list[int]] = collections.defaultdict(list)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                with upstream.lock:
                    upstream.times[query["key"][0]].append(time.monotonic())
                    upstream.ns[query["key"][0]].append(int(query["n"][0]))
                body = json.dumps({"ok": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    found = Upstream()
    server = ThreadingHTTPServer(("127.0.0.1", 0), found.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield found, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    folder = tmp_path / "workflows.d"
    folder.mkdir()
    (folder / "wf.yaml").write_text(textwrap.dedent(WHOLE).strip() + "\n")
    return load([folder])


@pytest.fixture
async def store(registry: Registry, storage_url: str) -> AsyncIterator[Storage]:
    storage = open_storage(storage_url)
    await storage.open(list(registry.data_types.values()))
    try:
        yield storage
    finally:
        await storage.close()


async def schedule(interpreter: Interpreter, workflow: str, ns: list[int], url: str,
                   rec: str = "r") -> list[str]:
    """One run of `plan-<workflow>` scheduling a job of `workflow` per n: the flow notes of
    its log."""
    result = await interpreter.run(interpreter.registry.workflows[f"plan-{workflow}"], {
        "ns": ns, "url": url, "rec": rec})
    assert result.error is None, result.error
    assert interpreter.storage is not None
    await interpreter.storage.runs.flush_runs()
    run = await interpreter.storage.runs.get_run(result.run_id)
    assert run is not None
    return list(run.get("flow") or [])


async def run_until(interpreter: Interpreter, store: Storage, done: int,
                    timeout: float = 60) -> None:
    """The scheduler runs until `done` jobs are done (then a little longer, to catch any
    job that should not have run)."""
    stop = asyncio.Event()
    scheduler = Scheduler(interpreter, store)
    async with interpreter.services.running(interpreter.registry.settings):
        task = asyncio.create_task(scheduler.run(stop))
        try:
            async with asyncio.timeout(timeout):
                while len(await store.jobs.list_jobs(status="done", limit=10_000)) < done:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


def most_in_window(times: list[float], window: float) -> int:
    """The most calls that came within any `window` seconds of each other."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


async def test_a_throttle_starts_at_most_limit_per_period_per_key_in_order(
        registry: Registry, store: Storage, upstream: tuple[Upstream, str]) -> None:
    found, url = upstream
    interpreter = with_jobs(Interpreter(registry, store))
    await schedule(interpreter, "throttled", list(range(30)), url)
    jobs = await store.jobs.list_jobs(workflow="throttled", limit=100)
    assert {job.throttle_key for job in jobs} == {"throttled:acct-0", "throttled:acct-1"}
    assert {(job.throttle_limit, job.throttle_ms) for job in jobs} == {(5, 1000)}
    await run_until(interpreter, store, 30)
    assert sorted(n for ns in found.ns.values() for n in ns) == list(range(30))
    await store.runs.flush_runs()
    runs = await store.runs.list_runs(workflow="throttled", limit=100)
    for parity in (0, 1):
        mine = sorted((run["started_at"], run["params"]["n"]) for run in runs
                      if run["params"]["n"] % 2 == parity)
        assert len(mine) == 15
        times = [at.timestamp() for at, _ in mine]
        # 15 starts at 5 a second: the 6th no sooner than a second after the 1st, and so on
        # (a start is counted when its job is claimed; its run starts a moment later).
        assert most_in_window(times, 0.9) <= 5, repr(mine)
        assert times[-1] - times[0] >= 1.9
        # In order: each second's starts come after the one before's.
        batches = [sorted(n for _, n in mine[i:i + 5]) for i in range(0, 15, 5)]
        assert all(a[-1] < b[0] for a, b in itertools.pairwise(batches)), batches


async def test_forty_schedulings_of_a_debounce_key_make_one_run_with_the_last_params(
        registry: Registry, store: Storage, upstream: tuple[Upstream, str]) -> None:
    found, url = upstream
    interpreter = with_jobs(Interpreter(registry, store))
    notes = []
    for n in range(40):  # forty runs, each scheduling one job of the same key
        notes += await schedule(interpreter, "debounced", [n], url, rec="rec-1")
    await schedule(interpreter, "debounced", [7], url, rec="rec-2")  # another key: its own
    assert len(notes) == 39
    assert "a job of 'debounced' debounced" in notes[0] and "'rec-1'" in notes[0]
    pending = await store.jobs.list_jobs(workflow="debounced", status="pending")
    assert sorted(job.data["params"]["n"] for job in pending) == [7, 39]
    await run_until(interpreter, store, 2)
    assert found.ns == {"rec-1": [39], "rec-2": [7]}


async def test_debounce_in_one_run_collapses_too(
        registry: Registry, store: Storage, upstream: tuple[Upstream, str]) -> None:
    found, url = upstream
    interpreter = with_jobs(Interpreter(registry, store))
    notes = await schedule(interpreter, "debounced", list(range(40)), url, rec="rec-1")
    assert notes == ["39 jobs of 'debounced' debounced: the job waiting with its key "
                     "'rec-1' runs instead, with the latest params"]
    await run_until(interpreter, store, 1)
    assert found.ns == {"rec-1": [39]}


async def test_a_singleton_key_waiting_skips_the_job_and_the_run_log_says_so(
        registry: Registry, store: Storage, upstream: tuple[Upstream, str]) -> None:
    found, url = upstream
    interpreter = with_jobs(Interpreter(registry, store))
    assert await schedule(interpreter, "single", [1], url, rec="s") == []
    notes = await schedule(interpreter, "single", [2, 3], url, rec="s")
    assert notes == ["2 jobs of 'single' skipped: a job with its singleton key 's' waits "
                     "or runs"]
    assert await schedule(interpreter, "single", [4], url, rec="t") == []
    await run_until(interpreter, store, 2)
    assert found.ns == {"s": [1], "t": [4]}
    # Once its job is done, the key is free again.
    assert await schedule(interpreter, "single", [5], url, rec="s") == []
    await run_until(interpreter, store, 3)
    assert found.ns["s"] == [1, 5]


async def test_a_failed_singleton_job_is_not_retried_while_its_key_is_taken(
        registry: Registry, store: Storage, upstream: tuple[Upstream, str]) -> None:
    _, url = upstream
    interpreter = with_jobs(Interpreter(registry, store))
    await schedule(interpreter, "single", [1], url, rec="s")
    [first] = await store.jobs.list_jobs(workflow="single")
    assert await store.jobs.cancel([first.id], first.due_at) == 1
    await schedule(interpreter, "single", [2], url, rec="s")  # the key is free: written
    assert not await store.jobs.retry(first.id, first.due_at)  # a second one: refused
    [second] = await store.jobs.list_jobs(workflow="single", status="pending")
    await store.jobs.cancel([second.id], second.due_at)
    assert await store.jobs.retry(first.id, first.due_at)


async def test_a_debounced_trigger_runs_once_for_forty_changes_with_the_last_record(
        registry: Registry, store: Storage, upstream: tuple[Upstream, str]) -> None:
    found, url = upstream
    settings = with_environment(registry.settings, {"UPSTREAM": url})
    registry = dataclasses.replace(registry, settings=settings)
    interpreter = with_jobs(Interpreter(registry, store))
    ids = [(await store.records.create("contact", {"n": 0}, at=datetime.now(UTC))).id
           for _ in range(2)]
    assert all(isinstance(id, str) for id in ids)
    for n in range(1, 41):  # forty runs, each changing the first contact
        result = await interpreter.run(registry.workflows["edit"], {"contact": ids[0], "n": n})
        assert result.error is None, result.error
    await interpreter.run(registry.workflows["edit"], {"contact": ids[1], "n": 7})
    pending = await store.jobs.list_jobs(workflow="contact-changed", status="pending")
    assert sorted(job.data["after"]["n"] for job in pending) == [7, 40]
    await run_until(interpreter, store, 2)
    assert found.ns == {ids[0]: [40], ids[1]: [7]}


async def test_a_trigger_key_reads_the_record_on_every_event_and_is_its_own(
        registry: Registry, store: Storage) -> None:
    """`after._id` keys a delete too (the record as it was), and a trigger's keys are
    prefixed `trigger/<name>`: no API workflow's (its own name, no '/') can meet them."""
    interpreter = with_jobs(Interpreter(registry, store))
    change = await store.records.create("contact", {"n": 0}, at=datetime.now(UTC))
    result = await interpreter.run(registry.workflows["drop"], {"contact": change.id})
    assert result.error is None, result.error
    [job] = await store.jobs.list_jobs(workflow="contact-gone")
    assert job.throttle_key == f"trigger/contact-gone:{change.id}"
    assert job.data["after"] is None  # the run sees the change as it was
