"""A log-out, on SQLite and PostgreSQL: its token is refused at once by the instance that
logged it out (whose credential cache held it), by other instances within the cache's
second, and not at all when the run that logged out failed and was rolled back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from conftest import served

from gateway.api.auth import KEY_CACHE_SECONDS, Authenticator, key_hash
from gateway.core.settings import Settings
from gateway.runtime.accounts import Accounts
from gateway.storage import Storage

CONFIG = """
kind: api_workflow
name: join
expose: true
auth: none
params: {email: {type: text}}
steps:
  - action: signup_user
    email: "{{ params.email }}"
    password: correct horse
---
kind: api_workflow
name: me
expose: true
auth: user
steps:
  - action: return_data
    data: {me: "{{ current_user._id }}"}
---
kind: api_workflow
name: logout
expose: true
auth: user
steps:
  - action: logout_user
---
kind: api_workflow
name: logout-then-fail
expose: true
auth: user
steps:
  - action: logout_user
  - action: fail
    status: 409
    code: CHANGED_MY_MIND
    message: the log-out is undone with the rest of the run
"""


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with served(CONFIG, url, home=tmp_path, scheduler=False) as gateway:
        yield gateway.client


async def call(client: httpx.AsyncClient, name: str, token: str) -> httpx.Response:
    return await client.post(f"/api/1.1/wf/{name}", headers={"Authorization": f"Bearer {token}"})


async def test_a_logged_out_token_is_refused_at_once_where_it_logged_out(
        tmp_path: Path, storage_url: str) -> None:
    async with serving(tmp_path, storage_url) as gateway:
        joined = await gateway.post("/api/1.1/wf/join", json={"email": "ada@example.com"})
        token = joined.json()["response"]["token"]
        assert (await call(gateway, "me", token)).status_code == 200  # cached now
        assert (await call(gateway, "logout", token)).status_code == 200
        after = await call(gateway, "me", token)
    assert after.status_code == 401, after.text
    assert after.json()["body"]["status"] == "UNAUTHORIZED"


async def test_a_log_out_its_run_rolled_back_did_not_happen(tmp_path: Path,
                                                            storage_url: str) -> None:
    async with serving(tmp_path, storage_url) as gateway:
        joined = await gateway.post("/api/1.1/wf/join", json={"email": "ada@example.com"})
        token = joined.json()["response"]["token"]
        failed = await call(gateway, "logout-then-fail", token)
        still = await call(gateway, "me", token)
    assert failed.status_code == 409 and still.status_code == 200, (failed.text, still.text)


async def test_other_instances_refuse_it_within_the_cache_time(storage: Storage) -> None:
    now = [0.0]
    here = Accounts(storage.users, Settings())
    this = Authenticator(storage.keys, monotonic=lambda: now[0], accounts=here,
                         records=storage.records)
    other = Authenticator(storage.keys, monotonic=lambda: now[0],
                          accounts=Accounts(storage.users, Settings()), records=storage.records)
    _, session = await here.signup("ada@example.com", "correct horse", {}, False, None)
    token = session["token"]
    assert (await this.identify(token)) is not None and (await other.identify(token)) is not None
    assert await here.logout(key_hash(token))
    assert await this.identify(token) is None  # at once, though its cache held it
    assert await other.identify(token) is not None  # cached there, for at most a second
    now[0] = KEY_CACHE_SECONDS + 0.01
    assert await other.identify(token) is None
    assert await this.identify(token) is None
