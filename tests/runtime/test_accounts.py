"""Users on SQLite and PostgreSQL: sign-up, log-in, log-out, tokens that expire and lapse,
the access levels for users, and passwords and tokens kept out of every store in clear."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from click.testing import CliRunner
from conftest import served
from support import Clock

from gateway.api.auth import key_hash, new_key
from gateway.cli import main
from gateway.core.clock import utc_now
from gateway.core.settings import Settings
from gateway.runtime.accounts import FREE_FAILURES, Accounts
from gateway.storage import Storage
from gateway.storage.retention import purge_tokens_once

CONFIG = """
kind: data_type
name: user
api: {expose: true}
fields:
  name: {type: text}
---
kind: data_type
name: note
fields:
  text: {type: text}
---
kind: api_workflow
name: signup
expose: true
auth: none
params: {email: {type: text}, password: {type: text}, name: {type: text, optional: true},
         remember: {type: boolean, optional: true, default: false}}
steps:
  - action: signup_user
    email: "{{ params.email }}"
    password: "{{ params.password }}"
    fields: {name: "{{ params.name }}"}
    remember: "{{ params.remember }}"
---
kind: api_workflow
name: login
expose: true
auth: none
params: {email: {type: text}, password: {type: text}}
steps:
  - id: session
    action: login_user
    email: "{{ params.email }}"
    password: "{{ params.password }}"
  - action: return_data
    data: {mine: "{{ steps.session.user_id }}"}
---
kind: api_workflow
name: session
expose: true
auth: none
params: {email: {type: text}, password: {type: text}}
steps:
  - action: login_user
    email: "{{ params.email }}"
    password: "{{ params.password }}"
---
kind: api_workflow
name: logout
expose: true
auth: user
steps:
  - action: logout_user
---
kind: api_workflow
name: me
expose: true
auth: user
steps:
  - id: note
    action: create_thing
    type: note
    fields: {text: hi}
  - action: return_data
    data: {me: "{{ current_user }}", by: "{{ steps.note.created_by }}"}
---
kind: api_workflow
name: staff
expose: true
auth: admin
steps:
  - action: terminate
---
kind: api_workflow
name: readdress
expose: true
auth: admin
params: {id: {type: text}, email: {type: text}}
steps:
  - id: user
    action: make_changes
    type: user
    thing: "{{ params.id }}"
    fields: {email: "{{ params.email }}"}
  - action: return_data
    data: {email: "{{ steps.user.email }}"}
---
kind: api_workflow
name: unaddress
expose: true
auth: admin
params: {id: {type: text}}
steps:
  - id: user
    action: make_changes
    type: user
    thing: "{{ params.id }}"
    fields: {email: ""}
  - action: return_data
    data: {email: "{{ steps.user.email }}"}
"""
PASSWORD = "correct horse battery"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(CONFIG).strip())
    return path


@contextlib.asynccontextmanager
async def serving(config: Path, url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Storage]]:
    async with served(config, url) as gateway:
        yield gateway.client, gateway.storage


async def signup(client: httpx.AsyncClient, email: str = "Ada@Example.com",
                 **extra: Any) -> httpx.Response:
    return await client.post("/api/1.1/wf/signup",
                             json={"email": email, "password": PASSWORD, **extra})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_signup_answers_as_bubble_does(config: Path, storage_url: str) -> None:
    async with serving(config, storage_url) as (client, storage):
        answer = await signup(client, name="Ada")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {"status", "response"} and body["status"] == "success"
        assert set(body["response"]) == {"user_id", "token", "expires"}
        assert body["response"]["expires"] == 86_400
        user = await storage.records.get("user", body["response"]["user_id"])
        remembered = await signup(client, "bo@example.com", remember=True)
    assert user is not None and user["email"] == "ada@example.com" and user["name"] == "Ada"
    assert remembered.json()["response"]["expires"] == 365 * 86_400


async def test_a_used_email_in_any_case_and_a_short_password(config: Path,
                                                             storage_url: str) -> None:
    async with serving(config, storage_url) as (client, _):
        assert (await signup(client)).status_code == 200
        again = await signup(client, "  ADA@example.COM ")
        short = await client.post("/api/1.1/wf/signup",
                                  json={"email": "cy@example.com", "password": "short"})
    assert again.status_code == 400 and again.json()["body"]["status"] == "USED_EMAIL"
    assert short.status_code == 400 and short.json()["body"]["status"] == "PASSWORD_TOO_SHORT"


async def test_login_and_the_one_answer_for_bad_credentials(config: Path,
                                                            storage_url: str) -> None:
    async with serving(config, storage_url) as (client, _):
        user_id = (await signup(client)).json()["response"]["user_id"]
        good = await client.post("/api/1.1/wf/login",
                                 json={"email": "ada@EXAMPLE.com", "password": PASSWORD})
        wrong = await client.post("/api/1.1/wf/login",
                                  json={"email": "ada@example.com", "password": "nope nope"})
        unknown = await client.post("/api/1.1/wf/login",
                                    json={"email": "who@example.com", "password": PASSWORD})
    assert good.status_code == 200 and good.json()["response"] == {"mine": user_id}
    assert wrong.status_code == unknown.status_code == 400
    assert wrong.json() == unknown.json()
    assert wrong.json()["body"]["status"] == "INVALID_LOGIN_CREDENTIALS"


async def test_a_user_token_on_each_access_level(config: Path, storage_url: str) -> None:
    async with serving(config, storage_url) as (client, _):
        session = (await signup(client, name="Ada")).json()["response"]
        me = await client.post("/api/1.1/wf/me", headers=bearer(session["token"]))
        by_query = await client.post("/api/1.1/wf/me", params={"api_token": session["token"]})
        staff = await client.post("/api/1.1/wf/staff", headers=bearer(session["token"]))
    assert me.status_code == 200 and by_query.status_code == 200
    mine = me.json()["response"]
    assert mine["me"]["_id"] == session["user_id"] and mine["me"]["name"] == "Ada"
    assert mine["by"] == session["user_id"]  # created_by is the caller
    assert staff.status_code == 403 and staff.json()["body"]["status"] == "FORBIDDEN"


async def _until_refused(client: httpx.AsyncClient, token: str) -> float:
    """Seconds until the token is refused (the credential cache holds answers a second)."""
    began = time.monotonic()
    while time.monotonic() - began < 5:
        if (await client.post("/api/1.1/wf/me", headers=bearer(token))).status_code == 401:
            return time.monotonic() - began
        await asyncio.sleep(0.05)
    raise AssertionError("the logged-out token was still accepted after 5 s")


async def test_logout_revokes_the_token_it_came_with(config: Path, storage_url: str) -> None:
    async with serving(config, storage_url) as (client, _):
        first = (await signup(client)).json()["response"]["token"]
        login = await client.post("/api/1.1/wf/session", json={
            "email": "ada@example.com", "password": PASSWORD})
        second = login.json()["response"]["token"]
        out = await client.post("/api/1.1/wf/logout", headers=bearer(first))
        assert out.status_code == 200 and out.json()["response"] == {}
        await _until_refused(client, first)
        still = await client.post("/api/1.1/wf/me", headers=bearer(second))
    assert still.status_code == 200  # only the token the call came with


async def test_passwords_and_tokens_are_not_kept_in_clear(config: Path,
                                                          storage_url: str) -> None:
    async with serving(config, storage_url) as (client, storage):
        token = (await signup(client)).json()["response"]["token"]
        await client.post("/api/1.1/wf/me", headers=bearer(token))
        await storage.runs.flush_runs()
        runs = await storage.runs.list_runs(limit=100)
    if storage_url.startswith("sqlite"):
        path = Path(storage_url.removeprefix("sqlite:///"))
        stored = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    else:
        with psycopg.connect(storage_url) as conn:
            tables = ["gateway_records", "gateway_credentials", "gateway_tokens", "gateway_runs"]
            stored = repr([conn.execute(f"SELECT * FROM {t}").fetchall() for t in tables]).encode()
    assert PASSWORD.encode() not in stored and token.encode() not in stored
    assert b"$argon2id$" in stored
    assert PASSWORD not in repr(runs) and token not in repr(runs)


async def test_tokens_expire_and_lapse_when_idle(storage: Storage) -> None:
    clock = Clock(datetime(2026, 1, 1, tzinfo=UTC))
    settings = Settings(token_lifetime=timedelta(hours=24), idle_lapse=timedelta(hours=2))
    accounts = Accounts(storage.users, settings, clock, monotonic=lambda: clock.now.timestamp())
    _, session = await accounts.signup("a@example.com", PASSWORD, {}, False, None)
    token = session["token"]
    for _ in range(12):  # used every 1 h 50: the idle lapse moves on each time
        clock.now += timedelta(hours=1, minutes=50)
        if clock.now >= datetime(2026, 1, 2, tzinfo=UTC):
            break
        assert await accounts.user_of(token) == session["user_id"], clock.now
    clock.now = datetime(2026, 1, 2, tzinfo=UTC)
    assert await accounts.user_of(token) is None  # past its lifetime, however fresh
    _, fresh = await accounts.signup("b@example.com", PASSWORD, {}, False, None)
    clock.now += timedelta(hours=2, seconds=1)
    assert await accounts.user_of(fresh["token"]) is None  # idle for longer than the lapse


async def test_repeated_failures_for_one_email_are_slowed(storage: Storage) -> None:
    emails = Accounts(storage.users, Settings()).logins.emails
    delays = []
    for _ in range(FREE_FAILURES + 3):
        delays.append(emails.delay_for("x@example.com"))
        emails.failed("x@example.com")
    assert delays[:FREE_FAILURES + 1] == [0.0] * FREE_FAILURES + [0.25]
    assert delays[FREE_FAILURES + 1:] == [0.5, 1.0]
    assert emails.delay_for("other@example.com") == 0.0


def test_gateway_run_as_a_user_an_admin_or_nobody(config: Path, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'cli.db'}"

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, ["run", *args, "--config", str(config),
                                         "--database", database], catch_exceptions=False)

    signed = run("signup", "-p", "email=ada@example.com", "-p", f"password={PASSWORD}",
                 "-p", "name=Ada")
    assert signed.exit_code == 0, signed.output
    me = run("me", "--as", "ADA@example.com")
    assert me.exit_code == 0, me.output
    assert '"name":"Ada"' in me.stdout
    assert run("me", "--as", "anonymous").exit_code == 1  # 401
    assert run("staff", "--as", "admin").exit_code == 0
    unknown = run("me", "--as", "nobody@example.com")
    assert unknown.exit_code == 2 and "no user with the e-mail" in unknown.stderr


async def test_tokens_past_their_lifetime_or_idle_are_purged(storage: Storage) -> None:
    clock = Clock(datetime(2026, 1, 1, tzinfo=UTC))
    settings = Settings(token_lifetime=timedelta(hours=24), idle_lapse=timedelta(hours=2))
    accounts = Accounts(storage.users, settings, clock)
    _, old = await accounts.signup("a@example.com", PASSWORD, {}, False, None)
    clock.now += timedelta(hours=1)
    _, fresh = await accounts.signup("b@example.com", PASSWORD, {}, True, None)
    clock.now += timedelta(hours=1, minutes=30)  # `old` idle for 2 h 30, `fresh` for 1 h 30
    assert await purge_tokens_once(storage.users, settings, clock) == 1
    assert await accounts.user_of(old["token"]) is None
    assert await accounts.user_of(fresh["token"]) == fresh["user_id"]


async def _login(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/api/1.1/wf/login", json={"email": email, "password": PASSWORD})


async def _admin(storage: Storage) -> dict[str, str]:
    key = new_key()
    await storage.keys.create_key("ops", key_hash(key), utc_now())
    return bearer(key)


async def test_a_changed_email_is_the_one_that_logs_in(config: Path, storage_url: str) -> None:
    async with serving(config, storage_url) as (client, storage):
        admin = await _admin(storage)
        ada = (await signup(client, "ada@example.com")).json()["response"]["user_id"]
        moved = await client.post("/api/1.1/wf/readdress", headers=admin,
                                  json={"id": ada, "email": " Ada.New@Example.COM "})
        assert moved.status_code == 200, moved.text
        assert moved.json()["response"] == {"email": "ada.new@example.com"}
        new = await _login(client, "ADA.new@example.com")
        old = await _login(client, "ada@example.com")
        again = await signup(client, "ada@example.com")  # the old address is free again
        record = await storage.records.get("user", ada)
    assert new.status_code == 200 and new.json()["response"] == {"mine": ada}
    assert old.status_code == 400 and old.json()["body"]["status"] == "INVALID_LOGIN_CREDENTIALS"
    assert again.status_code == 200, again.text
    assert record is not None and record["email"] == "ada.new@example.com"


async def test_an_email_another_user_has_or_none_is_refused(config: Path,
                                                            storage_url: str) -> None:
    async with serving(config, storage_url) as (client, storage):
        admin = await _admin(storage)
        ada = (await signup(client, "ada@example.com")).json()["response"]["user_id"]
        await signup(client, "bo@example.com")
        taken = await client.post("/api/1.1/wf/readdress", headers=admin,
                                  json={"id": ada, "email": "BO@example.com"})
        garbage = await client.post("/api/1.1/wf/readdress", headers=admin,
                                    json={"id": ada, "email": "no address"})
        cleared = await client.put(f"/api/1.1/obj/user/{ada}", headers=admin,
                                   json={"name": "Ada"})
        still = await _login(client, "ada@example.com")
        record = await storage.records.get("user", ada)
    assert taken.status_code == 400 and taken.json()["body"]["status"] == "USED_EMAIL", taken.text
    assert garbage.status_code == 400 and garbage.json()["body"]["status"] == "INVALID_DATA"
    assert cleared.status_code == 400, cleared.text
    assert "cannot be cleared" in cleared.json()["body"]["message"]
    assert still.status_code == 200 and still.json()["response"] == {"mine": ada}
    assert record is not None and record["email"] == "ada@example.com" and record["name"] is None


async def test_an_empty_email_clears_it_as_null_does(config: Path, storage_url: str) -> None:
    """On create, PATCH and make_changes, for a user with no password; one with a password
    logs in with its e-mail, which "" can no more clear than null."""
    async with serving(config, storage_url) as (client, storage):
        admin = await _admin(storage)
        made = await client.post("/api/1.1/obj/user", headers=admin,
                                 json={"email": "", "name": "Cy"})
        assert made.status_code == 201, made.text
        cy = made.json()["id"]
        dee = (await client.post("/api/1.1/obj/user", headers=admin,
                                 json={"email": "dee@example.com"})).json()["id"]
        eve = (await client.post("/api/1.1/obj/user", headers=admin,
                                 json={"email": "eve@example.com"})).json()["id"]
        patched = await client.patch(f"/api/1.1/obj/user/{dee}", headers=admin,
                                     json={"email": ""})
        changed = await client.post("/api/1.1/wf/unaddress", headers=admin, json={"id": eve})
        ada = (await signup(client, "ada@example.com")).json()["response"]["user_id"]
        refused = [await client.patch(f"/api/1.1/obj/user/{ada}", headers=admin,
                                      json={"email": ""}),
                   await client.post("/api/1.1/wf/unaddress", headers=admin, json={"id": ada})]
        records = [await storage.records.get("user", id) for id in (cy, dee, eve, ada)]
        reused = await signup(client, "dee@example.com")  # the address it had is free again
        still = await _login(client, "ada@example.com")
    assert patched.status_code == 204, patched.text
    assert changed.status_code == 200 and changed.json()["response"] == {"email": None}, \
        changed.text
    assert [record and record["email"] for record in records] == [
        None, None, None, "ada@example.com"]
    for answer in refused:
        assert answer.status_code == 400, answer.text
        body = answer.json()["body"]
        assert body["status"] == "INVALID_DATA" and "cannot be cleared" in body["message"]
    assert reused.status_code == 200, reused.text
    assert still.status_code == 200 and still.json()["response"] == {"mine": ada}


async def test_the_data_api_changes_the_email_a_user_logs_in_with(config: Path,
                                                                  storage_url: str) -> None:
    async with serving(config, storage_url) as (client, storage):
        admin = await _admin(storage)
        ada = (await signup(client, "ada@example.com")).json()["response"]["user_id"]
        patched = await client.patch(f"/api/1.1/obj/user/{ada}", headers=admin,
                                     json={"email": "Ada@Elsewhere.org"})
        assert patched.status_code == 204, patched.text
        after_patch = (await _login(client, "ada@elsewhere.org")).status_code
        replaced = await client.put(f"/api/1.1/obj/user/{ada}", headers=admin,
                                    json={"email": "ada@third.net", "name": "Ada"})
        assert replaced.status_code == 204, replaced.text
        logins = [(await _login(client, email)).status_code
                  for email in ("ada@example.com", "ada@elsewhere.org", "ada@third.net")]
    assert after_patch == 200 and logins == [400, 400, 200]
