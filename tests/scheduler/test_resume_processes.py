"""A worker process killed with SIGKILL after its job's run sent an e-mail, on SQLite and
PostgreSQL: the job runs again under another worker once the dead worker's lease expires,
completes, and the e-mail is not sent twice (its step's checkpoint is restored)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from support import smtp_server, upstream

from gateway.compiler.loader import load
from gateway.core.ids import new_id
from gateway.storage import Job, Storage, open_storage

CONFIG = """
kind: settings
scheduler: {lease: 2s, poll: 100ms, grace: 5s}
smtp: {host: 127.0.0.1, port: PORT, starttls: false, from: gw@example.com}
---
kind: data_type
name: mark
fields:
  attempt: {type: integer}
---
kind: api_workflow
name: confirm
auth: admin
params:
  url: {type: text}
steps:
  - id: mail
    action: send_email
    to: buyer@example.com
    subject: Confirmed
    text: "attempt {{ run.attempt }}"
  - action: http_request
    url: "{{ params.url }}/slow"
    timeout: 60s
  - action: create_thing
    type: mark
    fields: {attempt: "{{ run.attempt }}"}
"""


async def until(what: str, check: Callable[[], Awaitable[bool] | bool],
                timeout: float = 60) -> None:
    async def met() -> bool:
        found = check()
        return await found if not isinstance(found, bool) else found

    try:
        async with asyncio.timeout(timeout):
            while not await met():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def start_worker(config: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "worker", "--config", str(config),
             "--database", url], stdout=out, stderr=subprocess.STDOUT)


async def test_a_worker_killed_after_sending_mail_leaves_one_mail(
        tmp_path: Path, storage_url: str) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    with smtp_server() as (inbox, port), upstream() as up:
        config = tmp_path / "workflows.d"
        config.mkdir()
        (config / "wf.yaml").write_text(textwrap.dedent(CONFIG).replace("PORT", str(port)))
        storage: Storage = open_storage(storage_url)
        await storage.open(list(load([config]).data_types.values()))
        try:
            job = Job(new_id(), "confirm", "schedule", datetime.now(UTC),
                      data={"params": {"url": up.url}, "identity": {"kind": "admin"}})
            await storage.jobs.enqueue([job])
            up.delay = 4.0  # the first worker is killed while it waits on this
            procs.append(start_worker(config, storage_url, tmp_path / "w1.log"))
            await until("the SMTP server got the mail", lambda: len(inbox.messages) == 1)
            # The step after the mail has started: the mail's checkpoint has committed (the
            # window between the two is the one resumable runs cannot close for SMTP).
            await until("the slow call started", lambda: len(up.headers) == 1)
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(30)
            up.delay = 0.0
            procs.append(start_worker(config, storage_url, tmp_path / "w2.log"))

            async def done() -> bool:
                found = await storage.jobs.get_job(job.id)
                return found is not None and found.status == "done"

            await until("the job done by the second worker", done)
            assert len(inbox.messages) == 1
            assert "attempt 1" in inbox.messages[0].get_content()
            assert len(up.headers) == 2  # the slow call, which did not finish, ran again
            found = await storage.jobs.get_job(job.id)
            assert found is not None and found.claims == 2 and found.run_id is not None
            run_id = found.run_id

            async def logged() -> bool:  # the worker writes its run log in the background
                return await storage.runs.get_run(run_id) is not None

            await until("the second run in the run log", logged)
            run = await storage.runs.get_run(run_id)
            assert run is not None and run["steps"][0]["status"] == "skipped"
            assert run["steps"][0]["reason"].startswith("done by an earlier attempt (run ")
            marks = (await storage.records.search("mark")).results
            assert [m["attempt"] for m in marks] == [2]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(30)
            await storage.close()
