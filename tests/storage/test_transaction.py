"""A run's writes are one transaction, with the jobs it schedules and the trigger runs its
changes call for: all of them commit when the run succeeds, none when it fails or times out;
the run reads its own writes, others see none of them before the commit. On SQLite and
PostgreSQL, through the interpreter, the HTTP app and the storage API."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import served

from gateway.compiler.loader import load
from gateway.core.errors import StorageError
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.model import Registry
from gateway.scheduler import with_jobs
from gateway.storage import Storage, open_storage
from gateway.storage.contract import Constraint, FieldSpec, TypeSpec

CONFIG = """
kind: settings
limits: {run_timeout: 2s}
---
kind: data_type
name: lead
fields:
  name: {type: text}
  email: {type: text, unique: true}
  score: {type: number, default: 0}
---
kind: database_trigger
name: on-lead
type: lead
events: [create, change]
steps:
  - action: log
    message: "lead {{ after.name }}"
---
kind: api_workflow
name: later
auth: none
params: {}
steps:
  - action: log
    message: later
---
kind: api_workflow
name: change-then-fail
expose: true
auth: none
params:
  keep: {type: text}
  fail: {type: boolean}
steps:
  - id: new
    action: create_thing
    type: lead
    fields: {name: fresh}
  - action: make_changes
    type: lead
    thing: "{{ params.keep }}"
    fields: {score: 5}
  - action: schedule_workflow
    workflow: later
    delay: 1h
    params: {}
  - action: fail
    only_when: "{{ params.fail }}"
    message: "no"
  - action: return_data
    data: {id: "{{ steps.new._id }}"}
---
kind: api_workflow
name: read-own
expose: true
auth: none
params: {}
steps:
  - id: new
    action: create_thing
    type: lead
    fields: {name: mine, score: 7}
  - id: found
    action: search
    type: lead
    constraints: [{key: name, constraint: equals, value: mine}]
  - id: again
    action: get_thing
    type: lead
    thing: "{{ steps.new._id }}"
  - action: return_data
    data: {count: "{{ steps.found.count }}", score: "{{ steps.again.score }}"}
---
kind: api_workflow
name: duplicate-continues
expose: true
auth: none
params: {}
steps:
  - action: create_thing
    type: lead
    fields: {name: first, email: a@example.com}
  - id: twice
    action: create_thing
    on_error: continue
    type: lead
    fields: {name: second, email: a@example.com}
  - action: create_thing
    type: lead
    fields: {name: third, email: b@example.com}
---
kind: data_type
name: note
fields:
  text: {type: text}
---
kind: api_workflow
name: held-then-duplicate
expose: true
auth: none
params: {}
steps:
  - action: create_thing
    type: note
    fields: {text: kept}
  - action: create_thing
    on_error: continue
    type: lead
    fields: {name: again, email: taken@example.com}
---
kind: api_workflow
name: slow
expose: true
auth: none
params: {url: {type: text}}
steps:
  - action: create_thing
    type: lead
    fields: {name: slow}
  - action: http_request
    method: GET
    url: "{{ params.url }}"
    timeout: 10s
"""


def _registry(tmp_path: Path) -> Registry:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(CONFIG).strip())
    return load([path])


@contextlib.asynccontextmanager
async def _opened(registry: Registry, storage_url: str) -> AsyncIterator[Storage]:
    storage = open_storage(storage_url)
    await storage.open(list(registry.data_types.values()))
    try:
        yield storage
    finally:
        await storage.close()


async def _names(storage: Storage) -> list[str]:
    page = await storage.records.search("lead", sort=[], limit=100)
    return sorted(record["name"] for record in page.results)


async def test_a_run_that_fails_leaves_no_record_change_or_job(tmp_path: Path,
                                                               storage_url: str) -> None:
    registry = _registry(tmp_path)
    async with _opened(registry, storage_url) as storage:
        keep = (await storage.records.create("lead", {"name": "keep"})).id
        interpreter = with_jobs(Interpreter(registry, storage))
        workflow = registry.workflows["change-then-fail"]
        failed = await interpreter.run(workflow, {"keep": keep, "fail": True})
        assert failed.error is not None and failed.error.code == "FAILED"
        assert await _names(storage) == ["keep"]
        kept = await storage.records.get("lead", keep)
        assert kept is not None and kept["score"] == 0
        assert await storage.jobs.list_jobs() == []  # neither the scheduled run nor a trigger

        done = await interpreter.run(workflow, {"keep": keep, "fail": False})
        assert done.error is None, done.error
        assert await _names(storage) == ["fresh", "keep"]
        kept = await storage.records.get("lead", keep)
        assert kept is not None and kept["score"] == 5
        jobs = await storage.jobs.list_jobs()
        assert sorted(job.workflow for job in jobs) == ["later", "on-lead", "on-lead"]


async def test_a_run_reads_its_own_writes(tmp_path: Path, storage_url: str) -> None:
    registry = _registry(tmp_path)
    async with _opened(registry, storage_url) as storage:
        result = await Interpreter(registry, storage).run(registry.workflows["read-own"], {})
        assert result.error is None, result.error
        assert result.reply.data == {"count": 1, "score": 7}


async def test_a_failed_step_that_continues_costs_only_itself(tmp_path: Path,
                                                              storage_url: str) -> None:
    registry = _registry(tmp_path)
    async with _opened(registry, storage_url) as storage:
        run = await Interpreter(registry, storage).run(
            registry.workflows["duplicate-continues"], {})
        assert run.error is None, run.error
        assert await _names(storage) == ["first", "third"]


async def test_a_failing_first_statement_costs_only_itself_after_held_back_writes(
        tmp_path: Path, storage_url: str) -> None:
    """A new note (no unique field) waits for the run's next statement; that one fails (a
    taken email) and the run goes on: the note is kept, as on its own it would be."""
    registry = _registry(tmp_path)
    async with _opened(registry, storage_url) as storage:
        await storage.records.create("lead", {"name": "first", "email": "taken@example.com"})
        run = await Interpreter(registry, storage).run(
            registry.workflows["held-then-duplicate"], {})
        assert run.error is None, run.error
        notes = (await storage.records.search("note")).results
        assert [note["text"] for note in notes] == ["kept"]
        assert await _names(storage) == ["first"]


@contextlib.contextmanager
def _slow_server() -> Iterator[tuple[str, threading.Event, threading.Event]]:
    """A loopback HTTP server whose answer waits until the test releases it; its URL, the
    event it sets when a request arrived, and the one that releases the answer."""
    arrived, release = threading.Event(), threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            arrived.set()
            release.wait(10)
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", arrived, release
    finally:
        release.set()
        server.shutdown()
        server.server_close()


@contextlib.asynccontextmanager
async def _slow_gateway(tmp_path: Path, storage_url: str) -> AsyncIterator[
        tuple[httpx.AsyncClient, Storage, str, threading.Event, threading.Event]]:
    """The app on `storage_url` with its lifespan, a client, and the slow server's parts."""
    with _slow_server() as (url, arrived, release):
        async with served(_registry(tmp_path), storage_url) as gateway:
            yield gateway.client, gateway.storage, url, arrived, release


async def test_others_see_a_run_s_writes_only_once_it_committed(tmp_path: Path,
                                                                storage_url: str) -> None:
    async with _slow_gateway(tmp_path, storage_url) as (http, storage, url, arrived, release):
        call = asyncio.create_task(http.post("/api/1.1/wf/slow", json={"url": url}))
        assert await asyncio.to_thread(arrived.wait, 5)
        assert await _names(storage) == []  # written, not committed
        release.set()
        answer = await call
        assert answer.status_code == 200, answer.text
        assert await _names(storage) == ["slow"]


async def test_a_run_that_times_out_mid_transaction_is_rolled_back(tmp_path: Path,
                                                                   storage_url: str) -> None:
    async with _slow_gateway(tmp_path, storage_url) as (http, storage, url, _, release):
        answer = await http.post("/api/1.1/wf/slow", json={"url": url})
        release.set()
        assert answer.status_code == 500, answer.text
        await storage.runs.flush_runs()
        run = await storage.runs.get_run(answer.headers["x-run-id"])
        assert run is not None and "longer than 2 s" in str(run), run
        assert await _names(storage) == []
        # the writer is free again: a later run writes at once
        done = await http.post("/api/1.1/wf/read-own", json={})
        assert done.status_code == 200, done.text
        assert await _names(storage) == ["mine"]


TYPES = [TypeSpec("lead", {"name": FieldSpec("name", "text"),
                           "email": FieldSpec("email", "text", unique=True)}),
         TypeSpec("note", {"name": FieldSpec("name", "text")})]


@pytest.fixture
def storage_types() -> list[TypeSpec]:
    return TYPES


async def test_a_transaction_commits_or_rolls_back_as_one(storage: Storage) -> None:
    transaction = storage.begin(5)
    first = await storage.records.create("lead", {"name": "a"})
    await storage.records.update("lead", first.id, {"name": "b"})
    assert (await storage.records.get("lead", first.id) or {})["name"] == "b"  # its own
    await transaction.rollback()
    assert await storage.records.get("lead", first.id) is None

    transaction = storage.begin(5)
    second = await storage.records.create("lead", {"name": "c"})
    seen: list[Any] = []

    async def elsewhere() -> None:  # another task: not part of the transaction
        seen.append(await storage.records.get("lead", second.id))

    await asyncio.create_task(elsewhere())
    assert seen == [None]
    await transaction.commit()
    await transaction.rollback()  # after a commit: nothing to undo
    assert (await storage.records.get("lead", second.id) or {})["name"] == "c"
    page = await storage.records.search("lead", [Constraint("name", "equals", "c")])
    assert page.count == 1


async def test_writes_of_others_wait_for_a_sqlite_transaction_and_then_commit(
        tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await storage.open(TYPES)
    try:
        transaction = storage.begin(5)
        mine = await storage.records.create("lead", {"name": "mine"})
        other = asyncio.create_task(storage.records.create("lead", {"name": "other"}))
        await asyncio.sleep(0.1)
        assert not other.done()  # SQLite has one writer, and this run holds it
        await transaction.commit()
        theirs = await asyncio.wait_for(other, 5)
        for id in (mine.id, theirs.id):
            assert await storage.records.get("lead", id) is not None
    finally:
        await storage.close()


async def test_a_sqlite_run_that_holds_the_writer_too_long_is_rolled_back(
        tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await storage.open(TYPES)
    try:
        transaction = storage.begin(0.2)
        held = await storage.records.create("lead", {"name": "held"})
        started = time.monotonic()
        await asyncio.sleep(0.4)
        with pytest.raises(StorageError, match="past its time"):
            await storage.records.create("lead", {"name": "late"})
        with pytest.raises(StorageError, match="past its time"):
            await transaction.commit()
        assert time.monotonic() - started < 5
        assert await storage.records.get("lead", held.id) is None
        after = await storage.records.create("lead", {"name": "after"})  # the writer is free
        assert await storage.records.get("lead", after.id) is not None
    finally:
        await storage.close()


async def test_concurrent_runs_on_one_record_each_commit_or_vanish_whole(
        tmp_path: Path, storage_url: str) -> None:
    """Forty runs at once change the same record (on PostgreSQL each waits for the row lock
    of the one before), half of them failing after their writes: every run answers, and
    exactly the ones that succeeded left their record, change and jobs."""
    registry = _registry(tmp_path)
    async with _opened(registry, storage_url) as storage:
        keep = (await storage.records.create("lead", {"name": "keep"})).id
        interpreter = with_jobs(Interpreter(registry, storage))
        workflow = registry.workflows["change-then-fail"]
        results = await asyncio.wait_for(asyncio.gather(*(
            interpreter.run(workflow, {"keep": keep, "fail": n % 2 == 1}) for n in range(40))),
            60)
        failed = [r for r in results if r.error is not None]
        assert len(failed) == 20 and {r.error.code for r in failed if r.error} == {"FAILED"}
        names = await _names(storage)
        assert names.count("fresh") == 20 and names.count("keep") == 1
        jobs = await storage.jobs.list_jobs(limit=1000)
        assert sum(job.workflow == "later" for job in jobs) == 20
        created = {r.reply.data["id"] for r in results if r.error is None}
        subjects = {job.subject for job in jobs if job.workflow == "on-lead"}
        assert created <= subjects and keep in subjects


async def test_a_new_record_with_no_unique_field_waits_for_the_end_of_its_run(
        storage: Storage) -> None:
    """Such a create cannot be refused for another record's value, so it is sent with the
    transaction's next statement or at its end: until then nobody else sees it, nothing is
    held, and a rollback never sends it."""
    transaction = storage.begin(5)
    dropped = await storage.records.create("note", {"name": "dropped"})
    await transaction.rollback()
    assert await storage.records.get("note", dropped.id) is None

    transaction = storage.begin(5)
    kept = await storage.records.create("note", {"name": "kept"})
    other = await asyncio.wait_for(  # another task writes at once: nothing holds the writer
        asyncio.create_task(storage.records.create("note", {"name": "other"})), 5)
    assert await asyncio.create_task(storage.records.get("note", kept.id)) is None
    await transaction.commit()
    for id in (kept.id, other.id):
        assert await storage.records.get("note", id) is not None

    transaction = storage.begin(5)
    first = await storage.records.create("note", {"name": "first"})
    second = await storage.records.create("note", {"name": "second"})
    assert (await storage.records.get("note", first.id) or {})["name"] == "first"  # its own
    await storage.records.update("note", second.id, {"name": "changed"})
    await transaction.commit()
    assert (await storage.records.get("note", second.id) or {})["name"] == "changed"
    page = await storage.records.search("note", [Constraint("name", "equals", "first")])
    assert page.count == 1

    transaction = storage.begin(5)
    both = [await storage.records.create("note", {"name": n}) for n in ("x", "y")]
    await transaction.commit()  # two held back: sent together, in one transaction
    for change in both:
        assert await storage.records.get("note", change.id) is not None
