"""Worker processes (`python -m gateway worker`) on one database: a worker killed with
SIGKILL mid-run leaves its job to run again after its lease; a restart loses no scheduled
job; several workers on PostgreSQL run each of 2,000 jobs exactly once; a recurring tick
fires once across three processes; SIGTERM lets a worker end cleanly; a worker's jobs call
out over HTTP and send mail, as `serve`'s do."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from support import rates_api, smtp_server

from gateway.compiler.loader import load
from gateway.core.ids import new_id
from gateway.storage import Job, Storage, open_storage

CONFIG = """
kind: settings
scheduler: {lease: 2s, poll: 100ms, concurrency: 8, grace: 5s}
limits: {template_timeout: 600s, max_template_operations: 100000000000,
         max_template_items: 10000000}
---
kind: data_type
name: mark
fields:
  n: {type: integer}
  attempt: {type: integer}
  due: {type: date}
---
kind: api_workflow
name: slow-then-mark
auth: admin
params:
  n: {type: integer}
steps:
  - action: set
    only_when: "{{ run.attempt == 1 }}"
    values:
      # minutes of work: the worker is killed long before it ends
      spin: "{% for i in range(10000000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
  - action: create_thing
    type: mark
    fields: {n: "{{ params.n }}", attempt: "{{ run.attempt }}"}
---
kind: api_workflow
name: mark
auth: admin
params:
  n: {type: integer}
steps:
  - action: create_thing
    type: mark
    fields: {n: "{{ params.n }}", attempt: "{{ run.attempt }}"}
"""

LOCKED = """
---
kind: api_workflow
name: touch
auth: admin
params:
  id: {type: text}
steps:
  - {action: make_changes, type: mark, thing: "{{ params.id }}", fields: {n: 1}}
"""

TICKING = """
---
kind: recurring_event
name: tick
every: 1s
steps:
  - action: create_thing
    type: mark
    fields: {due: "{{ run.scheduled_at }}", attempt: "{{ run.attempt }}"}
"""

OUTBOUND = """
---
kind: api_workflow
name: call-out
auth: admin
params:
  url: {type: text}
steps:
  - id: rates
    action: http_request
    url: "{{ params.url }}/latest?base=EUR"
  - action: create_thing
    type: mark
    fields: {n: "{{ steps.rates.status }}"}
---
kind: api_workflow
name: mail
auth: admin
params:
  to: {type: text}
steps:
  - action: send_email
    to: "{{ params.to }}"
    subject: From a worker
    text: "Sent by a job."
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows.d"
    folder.mkdir()
    (folder / "wf.yaml").write_text(textwrap.dedent(CONFIG).strip() + "\n")
    return folder


@pytest.fixture
async def store(config: Path, storage_url: str) -> AsyncIterator[Storage]:
    storage = open_storage(storage_url)
    await storage.open(list(load([config]).data_types.values()))
    try:
        yield storage
    finally:
        await storage.close()


class Workers:
    """Worker processes started by a test, all stopped (killed if need be) at its end."""

    def __init__(self, config: Path, url: str, logs: Path) -> None:
        self.config, self.url, self.logs = config, url, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "worker", "--config", str(self.config),
             "--database", self.url], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


@pytest.fixture
def workers(config: Path, storage_url: str, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(config, storage_url, tmp_path)
    try:
        yield started
    finally:
        started.close()


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 120) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def job(workflow: str, n: int, due: datetime | None = None) -> Job:
    due = due or datetime.now(UTC)
    return Job(new_id(due), workflow, "schedule", due,
               data={"params": {"n": n}, "identity": {"kind": "admin", "user_id": None}})


def scheduled(workflow: str, params: dict[str, object]) -> Job:
    return Job(new_id(), workflow, "schedule", datetime.now(UTC),
               data={"params": params, "identity": {"kind": "admin", "user_id": None}})


async def status(storage: Storage, job_id: str) -> str | None:
    found = await storage.jobs.get_job(job_id)
    return None if found is None else found.status


async def marks(storage: Storage) -> list[dict[str, object]]:
    return (await storage.records.search("mark")).results


async def test_a_killed_worker_s_job_runs_again_after_its_lease_and_nothing_is_lost(
        store: Storage, workers: Workers) -> None:
    slow = job("slow-then-mark", 1)
    later = job("mark", 2, datetime.now(UTC) + timedelta(seconds=4))
    await store.jobs.enqueue([slow, later])
    first = workers.start()
    await until("the slow job claimed", lambda: _is(store, slow.id, "running"))
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert await status(store, slow.id) == "running"  # its lease is the dead worker's
    workers.start()
    await until("both jobs done", lambda: _all_done(store, [slow.id, later.id]))
    found = await store.jobs.get_job(slow.id)
    assert found is not None and found.attempt == 2
    assert sorted((m["n"], m["attempt"]) for m in await marks(store)) == [(1, 2), (2, 1)]


async def _is(storage: Storage, job_id: str, wanted: str) -> bool:
    return await status(storage, job_id) == wanted


async def _all_done(storage: Storage, ids: list[str]) -> bool:
    return all([await status(storage, i) == "done" for i in ids])


async def test_a_worker_s_jobs_call_out_and_send_mail(
        config: Path, storage_url: str, workers: Workers) -> None:
    with rates_api() as url, smtp_server() as (inbox, port):
        settings = f"smtp: {{host: 127.0.0.1, port: {port}, starttls: false, from: gw@example.com}}"
        text = (config / "wf.yaml").read_text().replace("kind: settings\n",
                                                        f"kind: settings\n{settings}\n", 1)
        (config / "wf.yaml").write_text(text + OUTBOUND)
        storage = open_storage(storage_url)
        await storage.open(list(load([config]).data_types.values()))
        try:
            jobs = [scheduled("call-out", {"url": url}), scheduled("mail", {"to": "a@example.com"})]
            await storage.jobs.enqueue(jobs)
            workers.start()
            await until("both jobs ended", lambda: _all_ended(storage, [j.id for j in jobs]))
            ended = [await storage.jobs.get_job(j.id) for j in jobs]
            assert [(j.status, j.error) for j in ended if j] == [("done", None)] * 2
            assert [m["n"] for m in await marks(storage)] == [200]
        finally:
            await storage.close()
    assert [(m["To"], m["Subject"]) for m in inbox.messages] == [("a@example.com",
                                                                  "From a worker")]


async def _all_ended(storage: Storage, ids: list[str]) -> bool:
    return all([await status(storage, i) in ("done", "failed") for i in ids])


async def test_sigterm_ends_a_worker_cleanly(store: Storage, workers: Workers) -> None:
    one = job("mark", 1)
    await store.jobs.enqueue([one])
    proc = workers.start()
    await until("the job done", lambda: _is(store, one.id, "done"))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


@pytest.mark.postgres
async def test_three_workers_run_each_of_2000_jobs_exactly_once(
        config: Path, postgres_url: str, tmp_path: Path) -> None:
    storage = open_storage(postgres_url)
    await storage.open(list(load([config]).data_types.values()))
    started = Workers(config, postgres_url, tmp_path)
    try:
        for _ in range(3):
            started.start()
        ids = await storage.jobs.enqueue([job("mark", n) for n in range(2000)])
        assert len(ids) == 2000

        async def finished() -> bool:
            return len(await storage.jobs.list_jobs(status="done", limit=2000)) == 2000

        await until("2,000 jobs done", finished, timeout=240)
        found = (await storage.records.search("mark", limit=10_000)).results
        assert sorted(int(str(m["n"])) for m in found) == list(range(2000))
        assert {m["attempt"] for m in found} == {1}
    finally:
        started.close()
        await storage.close()


@pytest.mark.postgres
async def test_a_recurring_tick_fires_once_across_three_processes(
        config: Path, postgres_url: str, tmp_path: Path) -> None:
    (config / "wf.yaml").write_text((config / "wf.yaml").read_text() + TICKING)
    storage = open_storage(postgres_url)
    await storage.open(list(load([config]).data_types.values()))
    started = Workers(config, postgres_url, tmp_path)
    try:
        for _ in range(3):
            started.start()

        async def ticked() -> bool:
            return len(await storage.jobs.list_jobs(status="done", workflow="tick")) >= 5

        await until("five ticks", ticked)
        for proc in started.procs:
            proc.send_signal(signal.SIGTERM)
        assert [proc.wait(30) for proc in started.procs] == [0, 0, 0]
        found = await marks(storage)
        dues = [m["due"] for m in found]
        assert len(dues) >= 5 and len(set(dues)) == len(dues)  # no tick ran twice
        done = await storage.jobs.list_jobs(status="done", workflow="tick", limit=1000)
        assert len(done) == len(found)
    finally:
        started.close()
        await storage.close()


@pytest.mark.postgres
async def test_sigterm_gives_back_a_job_still_running_after_the_grace_period(
        config: Path, postgres_url: str, tmp_path: Path) -> None:
    (config / "wf.yaml").write_text((config / "wf.yaml").read_text() + LOCKED)
    storage = open_storage(postgres_url)
    await storage.open(list(load([config]).data_types.values()))
    started = Workers(config, postgres_url, tmp_path)
    try:
        mark = await storage.records.create("mark", {"n": 0})
        with psycopg.connect(postgres_url) as locker:  # the job's write waits on this lock
            locker.execute("SELECT 1 FROM gateway_records WHERE id = %s FOR UPDATE", (mark.id,))
            stuck = Job(new_id(), "touch", "schedule", datetime.now(UTC),
                        data={"params": {"id": mark.id}, "identity": {"kind": "admin"}})
            await storage.jobs.enqueue([stuck])
            proc = started.start()
            await until("the job claimed", lambda: _is(storage, stuck.id, "running"))
            proc.send_signal(signal.SIGTERM)  # grace is 5 s; the lock outlasts it
            assert await asyncio.to_thread(proc.wait, 60) == 0
            locker.rollback()
        back = await storage.jobs.get_job(stuck.id)
        assert back is not None and (back.status, back.attempt, back.worker) == (
            "pending", 0, None)
    finally:
        started.close()
        await storage.close()


def test_the_worker_refuses_an_invalid_config(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: recurring_event\nname: x\ncron: '61 * * * *'\n"
                                       "steps: [{action: terminate}]\n")
    result = subprocess.run([sys.executable, "-m", "gateway", "worker", "--config",
                             str(tmp_path), "--database", f"sqlite:///{tmp_path / 'g.db'}"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "GATEWAY_DATABASE_URL": ""})
    assert result.returncode == 1
    assert "recurring.bad-cron" in result.stderr
