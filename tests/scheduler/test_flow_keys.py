"""Concurrency keys end to end, on SQLite and PostgreSQL: jobs scheduled by a run get their
key from their workflow's `concurrency`, and a scheduler running 8 at once never runs two
jobs of one key at once under `limit: 1` (two under `limit: 2`), while jobs without a key
overlap freely (which shows the check below can see an overlap). Two `gateway worker`
processes on one PostgreSQL keep the limit too. Hostile keys: one that renders huge is cut
and hashed, one that renders empty or fails fails the scheduling run, nothing kept.

Each job calls a loopback server that counts, per key, the calls in flight at once: the
overlap is seen where it would hurt, at the upstream."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.compiler.loader import load
from gateway.runtime.flow_keys import MAX_KEY
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.model import Registry
from gateway.scheduler import Scheduler, with_jobs
from gateway.storage import Job, Storage, open_storage

CONFIG = """
kind: settings
scheduler: {poll: 50ms, lease: 30s, concurrency: 8}
---
kind: api_workflow
name: sync
auth: admin
params:
  n: {type: integer}
  url: {type: text}
concurrency: {key: "acct-{{ params.n // 10 }}"}
steps:
  - action: http_request
    url: "{{ params.url }}/?key=acct-{{ params.n // 10 }}"
---
kind: api_workflow
name: sync-two
auth: admin
params:
  n: {type: integer}
  url: {type: text}
concurrency: {key: "acct-{{ params.n // 10 }}", limit: 2}
steps:
  - action: http_request
    url: "{{ params.url }}/?key=acct-{{ params.n // 10 }}"
---
kind: api_workflow
name: sync-free
auth: admin
params:
  n: {type: integer}
  url: {type: text}
steps:
  - action: http_request
    url: "{{ params.url }}/?key=acct-{{ params.n // 10 }}"
---
kind: api_workflow
name: sync-wide
auth: admin
params:
  n: {type: integer}
  url: {type: text}
concurrency: {key: "acct-{{ params.n // 11 }}", limit: 1}
steps:
  - action: http_request
    url: "{{ params.url }}/?key=acct-{{ params.n // 11 }}"
---
kind: api_workflow
name: keyed-by-text
auth: admin
params:
  account: {type: text, optional: true}
  d: {type: integer, optional: true, default: 1}
concurrency: {key: "{{ params.account or '' }}-{{ 1 // params.d }}"}
steps: [{action: terminate}]
---
kind: api_workflow
name: keyed-empty
auth: admin
params:
  account: {type: text, optional: true}
  d: {type: integer, optional: true}
concurrency: {key: "{{ params.account or '' }}"}
steps: [{action: terminate}]
"""
# One workflow scheduling each of them (a step names the workflow it schedules).
PLAN = """
---
kind: api_workflow
name: plan-{name}
auth: admin
params:
  ns: {{type: integer, list: true}}
  url: {{type: text}}
steps:
  - action: schedule_workflow_on_list
    workflow: {name}
    list: "{{{{ params.ns }}}}"
    item_param: n
    params: {{url: "{{{{ params.url }}}}"}}
"""
SCHEDULE = """
---
kind: api_workflow
name: schedule-{name}
auth: admin
params:
  account: {{type: text, optional: true}}
  d: {{type: integer, optional: true, default: 1}}
steps:
  - id: job
    action: schedule_workflow
    workflow: {name}
    params: {{account: "{{{{ params.account }}}}", d: "{{{{ params.d }}}}"}}
  - action: return_data
    data: {{id: "{{{{ steps.job.id }}}}"}}
"""
WHOLE = (CONFIG + "".join(PLAN.format(name=n) for n in ("sync", "sync-two", "sync-free",
                                                         "sync-wide"))
         + "".join(SCHEDULE.format(name=n) for n in ("keyed-by-text", "keyed-empty")))


class Upstream:
    """A loopback HTTP server that holds each call `hold` seconds and counts, per key (the
    `key` query parameter), the calls in flight at once: the most ever (`peak`) and how
    many ended (`calls`)."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.lock = threading.Lock()
        self.active: collections.Counter[str] = collections.Counter()
        self.peak: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                key = parse_qs(urlsplit(self.path).query)["key"][0]
                with upstream.lock:
                    upstream.active[key] += 1
                    upstream.peak[key] = max(upstream.peak[key], upstream.active[key])
                time.sleep(upstream.hold)
                with upstream.lock:
                    upstream.active[key] -= 1
                    upstream.calls[key] += 1
                body = json.dumps({"ok": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    found = Upstream(hold=0.03)
    server = ThreadingHTTPServer(("127.0.0.1", 0), found.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield found, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows.d"
    folder.mkdir()
    (folder / "wf.yaml").write_text(textwrap.dedent(WHOLE).strip() + "\n")
    return folder


@pytest.fixture
def registry(config: Path) -> Registry:
    return load([config])


@pytest.fixture
async def store(registry: Registry, storage_url: str) -> AsyncIterator[Storage]:
    storage = open_storage(storage_url)
    await storage.open(list(registry.data_types.values()))
    try:
        yield storage
    finally:
        await storage.close()


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def ended(storage: Storage, workflow: str, count: int) -> bool:
    done = await storage.jobs.list_jobs(workflow=workflow, status="done", limit=10_000)
    return len(done) >= count


async def plan(interpreter: Interpreter, workflow: str, count: int, url: str) -> list[Job]:
    result = await interpreter.run(interpreter.registry.workflows[f"plan-{workflow}"], {
        "ns": list(range(count)), "url": url})
    assert result.error is None, result.error
    storage = interpreter.storage
    assert storage is not None
    return await storage.jobs.list_jobs(workflow=workflow, limit=10_000)


async def run_all(registry: Registry, store: Storage, workflow: str, count: int,
                  url: str) -> list[Job]:
    interpreter = with_jobs(Interpreter(registry, store))
    jobs = await plan(interpreter, workflow, count, url)
    stop = asyncio.Event()
    scheduler = Scheduler(interpreter, store)
    async with interpreter.services.running(registry.settings):
        task = asyncio.create_task(scheduler.run(stop))
        try:
            await until(f"{count} jobs of {workflow} done", lambda: ended(store, workflow, count))
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    return jobs


async def test_limit_1_never_runs_two_jobs_of_a_key_at_once(
        registry: Registry, store: Storage, upstream: tuple[Upstream, str]) -> None:
    seen, url = upstream
    jobs = await run_all(registry, store, "sync", 40, url)
    assert {(j.flow_key, j.flow_limit) for j in jobs} == {
        (f"sync:acct-{k}", 1) for k in range(4)}
    assert dict(seen.calls) == {f"acct-{k}": 10 for k in range(4)}
    assert dict(seen.peak) == {f"acct-{k}": 1 for k in range(4)}


async def test_limit_2_runs_two_of_a_key_at_once_never_three(
        registry: Registry, store: Storage, upstream: tuple[Upstream, str]) -> None:
    seen, url = upstream
    await run_all(registry, store, "sync-two", 40, url)
    assert dict(seen.calls) == {f"acct-{k}": 10 for k in range(4)}
    assert max(seen.peak.values()) == 2


async def test_jobs_without_a_key_overlap(
        registry: Registry, store: Storage, upstream: tuple[Upstream, str]) -> None:
    """The control: the same jobs without `concurrency` do run together (8 at once), so
    the peaks above are the keys' doing, not the load's."""
    seen, url = upstream
    jobs = await run_all(registry, store, "sync-free", 40, url)
    assert {j.flow_key for j in jobs} == {None}
    assert sum(seen.calls.values()) == 40
    assert max(seen.peak.values()) > 1


async def test_a_huge_key_is_cut_and_hashed(registry: Registry, store: Storage) -> None:
    interpreter = with_jobs(Interpreter(registry, store))
    ids = []
    for account in ("x" * 5000 + "a", "x" * 5000 + "b", "short"):
        result = await interpreter.run(registry.workflows["schedule-keyed-by-text"], {
            "account": account})
        assert result.error is None, result.error
        ids.append(result.reply.data["id"])
    found = [await store.jobs.get_job(id) for id in ids]
    keys = [job.flow_key for job in found if job is not None]
    assert len(keys) == 3 and len(set(keys)) == 3  # two long keys differing at the end
    assert all(len(key) <= len("keyed-by-text:") + MAX_KEY for key in keys)
    assert keys[0].startswith("keyed-by-text:xxxx") and keys[2] == "keyed-by-text:short-1"


@pytest.mark.parametrize(("workflow", "params", "said"), [
    ("keyed-empty", {}, "is empty"),
    ("keyed-by-text", {"account": "a", "d": 0}, "could not be made"),
])
async def test_a_key_that_renders_empty_or_fails_fails_the_scheduling_run(
        registry: Registry, store: Storage, workflow: str, params: dict[str, Any],
        said: str) -> None:
    interpreter = with_jobs(Interpreter(registry, store))
    result = await interpreter.run(registry.workflows[f"schedule-{workflow}"], params)
    assert result.error is not None and result.error.code == "INVALID_DATA"
    assert said in result.error.message and f"'{workflow}'" in result.error.message
    assert await store.jobs.list_jobs(workflow=workflow) == []  # nothing kept


@pytest.mark.postgres
async def test_two_worker_processes_keep_limit_1_over_200_jobs_on_20_keys(
        config: Path, registry: Registry, postgres_url: str, tmp_path: Path,
        upstream: tuple[Upstream, str]) -> None:
    seen, url = upstream
    storage = open_storage(postgres_url)
    await storage.open(list(registry.data_types.values()))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        interpreter = with_jobs(Interpreter(registry, storage))
        await storage.jobs.pause(None, interpreter.clock())
        jobs = await plan(interpreter, "sync-wide", 220, url)
        assert len({j.flow_key for j in jobs}) == 20
        for index in range(2):
            log = open(tmp_path / f"worker-{index}.log", "wb")  # noqa: SIM115
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "gateway", "worker", "--config", str(config),
                 "--database", postgres_url], stdout=log, stderr=subprocess.STDOUT))
            log.close()
        await asyncio.sleep(1.5)  # both started: they race for every claim
        await storage.jobs.resume(None)
        await until("220 jobs done", lambda: ended(storage, "sync-wide", 220), timeout=120)
        assert sum(seen.calls.values()) == 220
        assert dict(seen.peak) == {f"acct-{k}": 1 for k in range(20)}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(30)
        await storage.close()
