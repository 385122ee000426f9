"""Resumable runs, on SQLite and PostgreSQL, with a real scheduler, a real SMTP server and
a real upstream on loopback: a retried job's run restores the steps that called out or sent
mail (their checkpoints) rather than doing them again, re-runs its database steps, ignores
a checkpoint whose step changed, and a first run reads no checkpoint at all."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from support import Inbox, Upstream, smtp_server, upstream

from gateway.cli import main
from gateway.compiler.loader import load
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.model import Registry
from gateway.scheduler import Scheduler, with_jobs
from gateway.storage import Constraint, Job, Storage, open_storage
from gateway.storage.contract import Checkpoint

CONFIG = """
kind: settings
scheduler: {poll: 50ms, lease: 30s}
smtp: {host: 127.0.0.1, port: PORT, starttls: false, from: gw@example.com}
---
kind: data_type
name: mark
fields:
  n: {type: integer}
  attempt: {type: integer}
---
kind: api_workflow
name: order
auth: admin
retry: {max_attempts: 3, backoff: 0s, max_backoff: 0s}
params:
  url: {type: text}
steps:
  - action: create_thing
    type: mark
    fields: {n: 1, attempt: "{{ run.attempt }}"}
  - id: mail
    action: send_email
    to: buyer@example.com
    subject: Your order
    text: "sent at attempt {{ run.attempt }}"
  - id: pay
    action: http_request
    method: POST
    url: "{{ params.url }}/pay"
    idempotency_key: "order-{{ run.job }}"
  - action: create_thing
    type: mark
    fields: {n: "{{ steps.pay.status }}", attempt: "{{ run.attempt }}"}
  - action: return_data
    data: {mail: "{{ steps.mail.message_id }}"}
---
kind: api_workflow
name: write-then-mail
auth: admin
retry: {max_attempts: 3, backoff: 0s, max_backoff: 0s}
params:
  url: {type: text}
steps:
  - action: create_thing
    type: mark
    fields: {n: 7, attempt: "{{ run.attempt }}"}
  - id: found
    action: search
    type: mark
  - id: mail
    action: send_email
    to: buyer@example.com
    subject: "{{ steps.found.count }} mark(s)"
    text: "sent at attempt {{ run.attempt }}"
  - action: http_request
    method: POST
    url: "{{ params.url }}/pay"
---
kind: custom_event
name: mail-buyer
params:
  n: {type: integer}
returns:
  id: {type: text}
steps:
  - action: log
    message: "about to mail"
  - id: sent
    action: send_email
    to: buyer@example.com
    subject: "Note {{ params.n }}"
    text: "from an event"
  - action: return_data
    data: {id: "{{ steps.sent.message_id }}"}
---
kind: api_workflow
name: notify
auth: admin
retry: {max_attempts: 3, backoff: 0s, max_backoff: 0s}
params:
  url: {type: text}
steps:
  - action: log
    message: start
  - id: note
    action: trigger_event
    event: mail-buyer
    params: {n: 1}
  - action: http_request
    method: POST
    url: "{{ params.url }}/after"
"""


@pytest.fixture
def mail() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as found:
        yield found


@pytest.fixture
def up() -> Iterator[Upstream]:
    with upstream() as found:
        yield found


def registry_of(tmp_path: Path, port: int, text: str = CONFIG) -> Registry:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(text).replace("PORT", str(port)).strip())
    return load([path])


@pytest.fixture
def registry(tmp_path: Path, mail: tuple[Inbox, int]) -> Registry:
    return registry_of(tmp_path, mail[1])


@pytest.fixture
async def store(registry: Registry, storage_url: str) -> AsyncIterator[Storage]:
    storage = open_storage(storage_url)
    await storage.open(list(registry.data_types.values()))
    try:
        yield storage
    finally:
        await storage.close()


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def run_jobs(interpreter: Interpreter, storage: Storage, job_id: str,
                   status: str) -> Job:
    """A scheduler runs until the job is `status`; the job then."""
    stop = asyncio.Event()
    async with interpreter.services.running(interpreter.registry.settings):
        task = asyncio.create_task(Scheduler(interpreter, storage).run(stop))
        try:
            await until(f"job {job_id} {status}", lambda: _is(storage, job_id, status))
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    found = await storage.jobs.get_job(job_id)
    assert found is not None
    return found


async def _is(storage: Storage, job_id: str, status: str) -> bool:
    found = await storage.jobs.get_job(job_id)
    return found is not None and found.status == status


def order(url: str) -> Job:
    return Job(f"order-{datetime.now(UTC).timestamp()}", "order", "schedule", datetime.now(UTC),
               data={"params": {"url": url}, "identity": {"kind": "admin"}})


async def steps_of(storage: Storage, run_id: str) -> list[dict[str, Any]]:
    await storage.runs.flush_runs()
    run = await storage.runs.get_run(run_id)
    assert run is not None
    return list(run["steps"])


async def marks(storage: Storage) -> list[tuple[int, int]]:
    page = await storage.records.search("mark", [Constraint("n", "is_not_empty", None)])
    return sorted((r["n"], r["attempt"]) for r in page.results)


async def test_an_automatic_retry_resumes_after_the_mail_it_sent(
        registry: Registry, store: Storage, mail: tuple[Inbox, int], up: Upstream) -> None:
    inbox, _ = mail
    up.statuses = [500]  # the payment fails once, then goes through
    job = order(up.url)
    await store.jobs.enqueue([job])
    done = await run_jobs(with_jobs(Interpreter(registry, store)), store, job.id, "done")
    assert done.attempt == 2 and done.claims == 2
    assert len(inbox.messages) == 1
    assert "sent at attempt 1" in inbox.messages[0].get_content()
    # the payment was asked twice (the first answer failed), with the same key
    keys = [h.get("idempotency-key") for h in up.headers]
    assert keys == [f"order-{job.id}", f"order-{job.id}"]
    assert done.run_id is not None
    steps = await steps_of(store, done.run_id)
    mail_step = steps[1]
    assert mail_step["status"] == "skipped" and mail_step.get("restored") is True
    assert mail_step["reason"].startswith("done by an earlier attempt (run ")
    first_run = mail_step["reason"].removeprefix("done by an earlier attempt (run ").rstrip(")")
    assert first_run != done.run_id
    assert [s["status"] for s in steps] == ["success", "skipped", "success", "success",
                                            "success"]
    # the database steps of the failed attempt rolled back and ran again
    assert await marks(store) == [(1, 2), (200, 2)]
    run = await store.runs.get_run(done.run_id)
    assert run is not None and run["result"]["mail"] == inbox.messages[0]["Message-ID"]


async def test_a_changed_step_is_not_restored_from_a_stale_checkpoint(
        tmp_path: Path, registry: Registry, store: Storage, mail: tuple[Inbox, int],
        up: Upstream) -> None:
    inbox, port = mail
    up.statuses = [500, 500, 500]  # every attempt of the first definition fails
    job = order(up.url)
    await store.jobs.enqueue([job])
    failed = await run_jobs(with_jobs(Interpreter(registry, store)), store, job.id, "failed")
    assert len(inbox.messages) == 1  # sent once, restored by the two retries
    # the mail step is replaced by another (its id changed) before the job is retried
    changed = registry_of(tmp_path, port, CONFIG.replace("id: mail", "id: notice").replace(
        "steps.mail.message_id", "steps.notice.message_id"))
    assert await store.jobs.retry(job.id, datetime.now(UTC))
    done = await run_jobs(with_jobs(Interpreter(changed, store)), store, job.id, "done")
    assert len(inbox.messages) == 2
    assert done.run_id is not None and failed.run_id != done.run_id
    step = (await steps_of(store, done.run_id))[1]
    assert step["status"] == "success" and "restored" not in step
    assert step["checkpoint"].startswith("ignored: run ")


async def test_a_first_run_reads_no_checkpoint(
        registry: Registry, store: Storage, mail: tuple[Inbox, int], up: Upstream) -> None:
    """Observed through the store: a checkpoint planted before the first claim (as if a
    run had left it) is not restored by the first run, which never reads checkpoints; the
    second claim does read it."""
    inbox, _ = mail
    job = order(up.url)
    await store.jobs.enqueue([job])
    planted = Checkpoint("2", "send_email", "mail", "planted-run", datetime.now(UTC),
                         {"message_id": "<planted@example.com>", "recipients": 1,
                          "refused": {}})
    await store.jobs.checkpoint(job.id, planted)
    done = await run_jobs(with_jobs(Interpreter(registry, store)), store, job.id, "done")
    assert done.claims == 1 and len(inbox.messages) == 1  # the first run sent it
    assert done.run_id is not None
    assert (await steps_of(store, done.run_id))[1]["status"] == "success"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


async def test_a_retry_from_a_step_runs_it_and_later_ones_again(
        tmp_path: Path, registry: Registry, store: Storage, mail: tuple[Inbox, int],
        up: Upstream, storage_url: str) -> None:
    inbox, _ = mail
    where = ("--config", str(tmp_path / "wf.yaml"), "--database", storage_url)
    interpreter = with_jobs(Interpreter(registry, store))
    up.statuses = [500] * 3  # the payment fails on every attempt
    job = order(up.url)
    await store.jobs.enqueue([job])
    await run_jobs(interpreter, store, job.id, "failed")
    assert len(inbox.messages) == 1
    shown = json.loads((await asyncio.to_thread(invoke, "jobs", "show", job.id, *where)).stdout)
    assert [(c["step"], c["action"], c["id"]) for c in shown["checkpoints"]] == [
        ("2", "send_email", "mail")]
    # from step 3: the mail of step 2 stays done (the payment fails three times again)
    up.statuses = [500] * 3
    retried = await asyncio.to_thread(invoke, "jobs", "retry", job.id, "--from-step", "3",
                                      *where)
    assert retried.exit_code == 0 and "from step 3" in retried.stdout
    await run_jobs(interpreter, store, job.id, "failed")
    assert len(inbox.messages) == 1
    # from step 1: everything runs again, the mail too
    retried = await asyncio.to_thread(invoke, "jobs", "retry", job.id, "--from-step", "1",
                                      *where)
    assert retried.exit_code == 0
    await run_jobs(interpreter, store, job.id, "done")
    assert len(inbox.messages) == 2
    assert "sent at attempt 1" in inbox.messages[1].get_content()
    # a job that is not failed forgets nothing and is not replayed
    again = await asyncio.to_thread(invoke, "jobs", "retry", job.id, "--from-step", "1",
                                    *where)
    assert again.exit_code == 1
    usage = await asyncio.to_thread(invoke, "jobs", "retry", job.id, "--from-step", "0",
                                    *where)
    assert usage.exit_code == 2


async def test_the_steps_of_a_custom_event_are_checkpointed_at_their_path(
        registry: Registry, store: Storage, mail: tuple[Inbox, int], up: Upstream) -> None:
    inbox, _ = mail
    up.statuses = [500]
    job = Job(f"notify-{datetime.now(UTC).timestamp()}", "notify", "schedule",
              datetime.now(UTC), data={"params": {"url": up.url}, "identity": {"kind": "admin"}})
    await store.jobs.enqueue([job])
    done = await run_jobs(with_jobs(Interpreter(registry, store)), store, job.id, "done")
    assert done.claims == 2 and len(inbox.messages) == 1
    assert [(c.place, c.action, c.step_id) for c in await store.jobs.checkpoints(job.id)] == [
        ("2.2", "send_email", "sent"), ("3", "http_request", "")]
    assert done.run_id is not None
    event_steps = (await steps_of(store, done.run_id))[1]["steps"]
    assert [s["status"] for s in event_steps] == ["success", "skipped", "success"]
    assert event_steps[1]["reason"].startswith("done by an earlier attempt (run ")


async def test_a_run_that_wrote_before_its_mail_still_leaves_its_checkpoint(
        registry: Registry, store: Storage, mail: tuple[Inbox, int], up: Upstream) -> None:
    """The run holds its transaction's writes (on SQLite, the only writer) when the mail
    goes: its checkpoint is written outside that transaction all the same (on SQLite,
    queued behind it), and survives its rollback."""
    inbox, _ = mail
    up.statuses = [500]
    job = Job(f"wtm-{datetime.now(UTC).timestamp()}", "write-then-mail", "schedule",
              datetime.now(UTC), data={"params": {"url": up.url}, "identity": {"kind": "admin"}})
    await store.jobs.enqueue([job])
    done = await run_jobs(with_jobs(Interpreter(registry, store)), store, job.id, "done")
    assert done.claims == 2 and len(inbox.messages) == 1
    assert inbox.messages[0]["Subject"] == "1 mark(s)"  # the first attempt's write was read
    assert await marks(store) == [(7, 2)]  # and rolled back: the second attempt's is kept
    assert done.run_id is not None
    assert (await steps_of(store, done.run_id))[2]["status"] == "skipped"
