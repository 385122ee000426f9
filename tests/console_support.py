"""What the console's tests share: a config with one of each kind of document, an app on a
real store, signing in through the form, and jobs in each state."""

from __future__ import annotations

import contextlib
import re
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from conftest import Served, served

from gateway.api.auth import key_hash, new_key
from gateway.core.clock import utc_now
from gateway.core.ids import new_id
from gateway.storage import Job, Storage

CONFIG = """\
kind: settings
console: {enabled: true}
{server}
---
kind: api_workflow
name: create-lead
label: Create a lead from the website form
expose: true
auth: none
params: {email: {type: text}}
steps:
  - id: shout
    action: set
    values: {email: "{{ params.email | upper }}"}
  - action: return_data
    data: {email: "{{ steps.shout.email }}"}
---
kind: api_workflow
name: charge-card
label: Charge a card
expose: true
auth: none
params: {amount: {type: number}}
steps:
  - id: check
    action: set
    values: {ok: "{{ params.amount > 0 }}"}
  - id: refuse
    action: fail
    status: 402
    code: CARD_DECLINED
    message: "the card was declined for {{ params.amount }}"
---
kind: api_workflow
name: send-welcome
expose: false
auth: admin
params: {email: {type: text}}
steps:
  - action: log
    message: "welcome {{ params.email }}"
---
kind: custom_event
name: normalise
params: {email: {type: text}}
returns: {email: {type: text}}
steps:
  - action: return_data
    data: {email: "{{ params.email | lower }}"}
---
kind: recurring_event
name: nightly-cleanup
cron: "0 3 * * *"
workflow: send-welcome
params: {email: ops@example.com}
"""


def config(tmp_path: Path, server: str = "", console: str = "{enabled: true}") -> Path:
    folder = tmp_path / "config"
    folder.mkdir(exist_ok=True)
    text = CONFIG.replace("{server}", server).replace("console: {enabled: true}",
                                                      f"console: {console}")
    (folder / "main.yaml").write_text(textwrap.dedent(text))
    return folder


def console_served(folder: Path, url: str, **options: Any
                   ) -> contextlib.AbstractAsyncContextManager[Served]:
    """The console's config served on a store, without the scheduler (`options` go to
    `served`)."""
    return served(folder, url, scheduler=False, **options)


@contextlib.asynccontextmanager
async def serving(folder: Path, url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Storage]]:
    async with console_served(folder, url) as gateway:
        yield gateway.client, gateway.storage


async def admin_key(storage: Storage, label: str = "ops") -> str:
    key = new_key()
    await storage.keys.create_key(label, key_hash(key), utc_now())
    return key


def form_value(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, f"no {name} in the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str, base: str = "/console",
                  next: str = "") -> httpx.Response:
    form = await client.get(f"{base}/sign-in")
    token = form_value(form.text, "token")
    return await client.post(f"{base}/sign-in", data={"key": key, "token": token,
                                                      "next": next})


def job(workflow: str = "send-welcome", due: datetime | None = None) -> Job:
    due = due or datetime.now(UTC) - timedelta(minutes=5)
    return Job(id=new_id(due), workflow=workflow, source="schedule", due_at=due,
               data={"params": {"email": "ada@example.com"}, "identity": {"kind": "admin"}})


async def failed_job(storage: Storage, error: str = "ERROR: the mail server said no") -> Job:
    one = job()
    await storage.jobs.enqueue([one])
    now = datetime.now(UTC)
    claimed = await storage.jobs.claim("tests", now, now + timedelta(minutes=1), 100)
    assert one.id in {j.id for j in claimed}
    assert await storage.jobs.finish(one.id, "tests", "failed", now, None, error)
    return one
