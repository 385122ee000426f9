"""Bubble's account actions on SQLite and PostgreSQL, with a real SMTP server (aiosmtpd) on
loopback: credentials changed, temporary passwords, reset e-mails and tokens, other sessions
ended; and the hostile cases: a reset token used twice, expired or for another user, a
secret in the run log, a wrong current password, guesses rate limited, a taken e-mail."""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import support
from conftest import served
from support import Clock

from gateway.api.auth import key_hash, new_key
from gateway.runtime.after_commit import settled
from gateway.storage import Storage

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"

CONFIG = """
kind: settings
{smtp}tokens: {{address_failures: {{failures: {failures}, per: 1m}}}}
---
kind: data_type
name: user
api: {{expose: true}}
fields:
  name: {{type: text}}
---
kind: data_type
name: note
fields:
  text: {{type: text}}
---
kind: api_workflow
name: make_note
expose: true
auth: admin
steps:
  - action: create_thing
    type: note
    fields: {{text: hi}}
    password: "a password for a note"
---
kind: api_workflow
name: change_other
expose: true
auth: user
params: {{user: {{type: text}}}}
steps:
  - action: update_credentials
    user: "{{{{ params.user }}}}"
    password: "{{{{ params.user }}}}-and-more"
---
kind: api_workflow
name: bad_link
expose: true
auth: none
steps:
  - action: send_password_reset_email
    email: ada@example.com
    link: "https://app.example.com/reset"
---
kind: api_workflow
name: signup
expose: true
auth: none
params: {{email: {{type: text}}, password: {{type: text}}}}
steps:
  - action: signup_user
    email: "{{{{ params.email }}}}"
    password: "{{{{ params.password }}}}"
---
kind: api_workflow
name: login
expose: true
auth: none
params: {{email: {{type: text}}, password: {{type: text}}}}
steps:
  - action: login_user
    email: "{{{{ params.email }}}}"
    password: "{{{{ params.password }}}}"
---
kind: api_workflow
name: whoami
expose: true
auth: user
steps:
  - action: return_data
    data: {{me: "{{{{ current_user._id }}}}"}}
---
kind: api_workflow
name: change
expose: true
auth: user
params: {{email: {{type: text, optional: true}}, password: {{type: text, optional: true}},
         current: {{type: text, optional: true}}, keep: {{type: boolean, optional: true}}}}
steps:
  - id: changed
    action: update_credentials
    email: "{{{{ params.email }}}}"
    password: "{{{{ params.password }}}}"
    current_password: "{{{{ params.current }}}}"
    keep_other_sessions: "{{{{ params.keep }}}}"
  - action: return_data
    data: {{changed: "{{{{ steps.changed }}}}"}}
---
kind: api_workflow
name: admin_change
expose: true
auth: admin
params: {{user: {{type: text}}, password: {{type: text}}}}
steps:
  - action: update_credentials
    user: "{{{{ params.user }}}}"
    password: "{{{{ params.password }}}}"
---
kind: api_workflow
name: temp
expose: true
auth: admin
params: {{user: {{type: text}}}}
steps:
  - id: temp
    action: assign_temp_password
    user: "{{{{ params.user }}}}"
  - action: return_data
    data: {{password: "{{{{ steps.temp.password }}}}"}}
---
kind: api_workflow
name: temp_by_user
expose: true
auth: user
params: {{user: {{type: text}}}}
steps:
  - action: assign_temp_password
    user: "{{{{ params.user }}}}"
---
kind: api_workflow
name: forgot
expose: true
auth: none
params: {{email: {{type: text}}, subject: {{type: text, default: Your reset link}}}}
steps:
  - id: sent
    action: send_password_reset_email
    email: "{{{{ params.email }}}}"
    link: "https://app.example.com/reset?token={{token}}"
    subject: "{{{{ params.subject }}}}"
  - action: return_data
    data: {{sent: "{{{{ steps.sent }}}}"}}
---
kind: api_workflow
name: reset
expose: true
auth: none
params: {{token: {{type: text}}, password: {{type: text}}, email: {{type: text, optional: true}}}}
steps:
  - action: reset_password
    token: "{{{{ params.token }}}}"
    password: "{{{{ params.password }}}}"
    email: "{{{{ params.email }}}}"
---
kind: api_workflow
name: others
expose: true
auth: user
steps:
  - id: ended
    action: logout_other_sessions
  - action: return_data
    data: {{ended: "{{{{ steps.ended.sessions_ended }}}}"}}
---
kind: api_workflow
name: make_user
expose: true
auth: admin
params: {{email: {{type: text}}, password: {{type: text}}}}
steps:
  - action: create_thing
    type: user
    fields: {{email: "{{{{ params.email }}}}", name: Made}}
    password: "{{{{ params.password }}}}"
"""


async def forgot(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    """`send_password_reset_email` through its workflow, once its e-mail has gone (after
    the run's commit, in the background)."""
    answer = await client.post("/api/1.1/wf/forgot", **body)
    await settled()
    return answer


class Inbox(support.Inbox):
    """The shared test inbox, and the reset token of its last message."""

    def token(self) -> str:
        body = self.messages[-1].get_body(("plain",))
        assert body is not None
        found = re.search(r"token=(\S+)", body.get_content())
        assert found is not None
        return found.group(1)


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    with support.smtp_server(Inbox()) as served:
        yield served


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, url: str, clock: Clock, port: int | None = None,
                  failures: int = 20) -> AsyncIterator[tuple[httpx.AsyncClient, Storage]]:
    smtp = "" if port is None else (f"smtp: {{host: 127.0.0.1, port: {port}, starttls: false, "
                                    "from: gateway@example.com}\n")
    config = CONFIG.format(smtp=smtp, failures=failures)
    async with served(config, url, home=tmp_path, clock=clock,
                      monotonic=clock.monotonic) as app:
        yield app.client, app.storage


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def admin(storage: Storage) -> dict[str, str]:
    key = new_key()
    await storage.keys.create_key("test", key_hash(key), datetime.now(UTC))
    return bearer(key)


async def signup(client: httpx.AsyncClient, email: str = "ada@example.com") -> dict[str, Any]:
    answer = await client.post("/api/1.1/wf/signup", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["response"])


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/1.1/wf/login", json={"email": email, "password": password})


async def works(client: httpx.AsyncClient, token: str) -> bool:
    return (await client.post("/api/1.1/wf/whoami", headers=bearer(token))).status_code == 200


async def run_logs(storage: Storage, *responses: httpx.Response) -> str:
    await storage.runs.flush_runs()
    return json.dumps([await storage.runs.get_run(r.headers["x-run-id"]) for r in responses],
                      default=str)


# --- update_credentials -----------------------------------------------------------------------


async def test_a_new_password_ends_the_other_sessions(tmp_path: Path, storage_url: str,
                                                      clock: Clock) -> None:
    async with gateway(tmp_path, storage_url, clock) as (client, storage):
        first = await signup(client)
        second = (await login(client, "ada@example.com", PASSWORD)).json()["response"]
        changed = await client.post("/api/1.1/wf/change", headers=bearer(first["token"]), json={
            "password": NEW_PASSWORD, "current": PASSWORD})
        assert changed.status_code == 200, changed.text
        result = changed.json()["response"]["changed"]
        assert result["password_changed"] and result["sessions_ended"] == 1
        assert await works(client, first["token"])  # the caller's own session stays
        assert not await works(client, second["token"])
        assert (await login(client, "ada@example.com", PASSWORD)).status_code == 400
        assert (await login(client, "ada@example.com", NEW_PASSWORD)).status_code == 200
        log = await run_logs(storage, changed)
    assert NEW_PASSWORD not in log and PASSWORD not in log


async def test_keep_other_sessions_and_a_new_email(tmp_path: Path, storage_url: str,
                                                   clock: Clock) -> None:
    async with gateway(tmp_path, storage_url, clock) as (client, storage):
        first = await signup(client)
        second = (await login(client, "ada@example.com", PASSWORD)).json()["response"]
        changed = await client.post("/api/1.1/wf/change", headers=bearer(first["token"]), json={
            "email": "Ada.Lovelace@Example.com", "password": NEW_PASSWORD, "current": PASSWORD,
            "keep": True})
        assert changed.status_code == 200, changed.text
        assert changed.json()["response"]["changed"]["email"] == "ada.lovelace@example.com"
        assert await works(client, second["token"])
        user = await storage.records.get("user", first["user_id"])
        assert user is not None and user["email"] == "ada.lovelace@example.com"
        assert (await login(client, "ada.lovelace@example.com", NEW_PASSWORD)).status_code == 200
        assert (await login(client, "ada@example.com", NEW_PASSWORD)).status_code == 400


async def test_a_wrong_current_password_and_a_taken_email(tmp_path: Path, storage_url: str,
                                                          clock: Clock) -> None:
    async with gateway(tmp_path, storage_url, clock) as (client, storage):
        ada = await signup(client)
        await signup(client, "bo@example.com")
        wrong = await client.post("/api/1.1/wf/change", headers=bearer(ada["token"]), json={
            "password": NEW_PASSWORD, "current": "not the password"})
        missing = await client.post("/api/1.1/wf/change", headers=bearer(ada["token"]), json={
            "password": NEW_PASSWORD})
        taken = await client.post("/api/1.1/wf/change", headers=bearer(ada["token"]), json={
            "email": "BO@example.com", "current": PASSWORD})
        assert (await login(client, "ada@example.com", PASSWORD)).status_code == 200
        log = await run_logs(storage, wrong)
    assert wrong.status_code == missing.status_code == 400
    assert wrong.json()["body"]["status"] == "INVALID_LOGIN_CREDENTIALS"
    assert taken.status_code == 400 and taken.json()["body"]["status"] == "USED_EMAIL"
    assert "not the password" not in log and NEW_PASSWORD not in log


async def test_wrong_current_passwords_are_rate_limited(tmp_path: Path, storage_url: str,
                                                        clock: Clock) -> None:
    async with gateway(tmp_path, storage_url, clock, failures=3) as (client, _):
        ada = await signup(client)
        statuses = [(await client.post("/api/1.1/wf/change", headers=bearer(ada["token"]), json={
            "password": NEW_PASSWORD, "current": f"guess number {n}"})).status_code
            for n in range(4)]
        right = await client.post("/api/1.1/wf/change", headers=bearer(ada["token"]), json={
            "password": NEW_PASSWORD, "current": PASSWORD})
    assert statuses == [400, 400, 400, 429]
    assert right.status_code == 429 and right.json()["body"]["status"] == "RATE_LIMITED"


async def test_an_admin_sets_a_password_without_the_current_one(tmp_path: Path,
                                                                storage_url: str,
                                                                clock: Clock) -> None:
    async with gateway(tmp_path, storage_url, clock) as (client, storage):
        ada = await signup(client)
        changed = await client.post("/api/1.1/wf/admin_change", headers=await admin(storage),
                                    json={"user": ada["user_id"], "password": NEW_PASSWORD})
        assert changed.status_code == 200, changed.text
        assert not await works(client, ada["token"])  # an admin's change ends every session
        assert (await login(client, "ada@example.com", NEW_PASSWORD)).status_code == 200


# --- assign_temp_password ---------------------------------------------------------------------


async def test_a_temp_password_is_answered_once_and_never_logged(tmp_path: Path,
                                                                 storage_url: str,
                                                                 clock: Clock) -> None:
    async with gateway(tmp_path, storage_url, clock) as (client, storage):
        ada = await signup(client)
        answer = await client.post("/api/1.1/wf/temp", headers=await admin(storage),
                                   json={"user": ada["user_id"]})
        assert answer.status_code == 200, answer.text
        temp = answer.json()["response"]["password"]
        assert len(temp) >= 16
        assert not await works(client, ada["token"])
        assert (await login(client, "ada@example.com", temp)).status_code == 200
        assert (await login(client, "ada@example.com", PASSWORD)).status_code == 400
        refused = await client.post("/api/1.1/wf/temp_by_user", headers=bearer(
            (await signup(client, "bo@example.com"))["token"]), json={"user": ada["user_id"]})
        log = await run_logs(storage, answer)
    assert temp not in log
    assert refused.status_code == 403 and refused.json()["body"]["status"] == "FORBIDDEN"


# --- send_password_reset_email and reset_password ---------------------------------------------


async def test_a_reset_link_sets_a_password_once(tmp_path: Path, storage_url: str,
                                                 clock: Clock,
                                                 smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    async with gateway(tmp_path, storage_url, clock, port) as (client, storage):
        ada = await signup(client)
        sent = await forgot(client, json={"email": "ADA@example.com"})
        assert sent.status_code == 200, sent.text
        assert inbox.messages[-1]["To"] == "ada@example.com"
        assert inbox.messages[-1]["Subject"] == "Your reset link"
        token = inbox.token()
        reset = await client.post("/api/1.1/wf/reset",
                                  json={"token": token, "password": NEW_PASSWORD})
        assert reset.status_code == 200, reset.text
        assert not await works(client, ada["token"])  # a reset ends every session
        assert (await login(client, "ada@example.com", NEW_PASSWORD)).status_code == 200
        again = await client.post("/api/1.1/wf/reset",
                                  json={"token": token, "password": "yet another one"})
        assert (await login(client, "ada@example.com", "yet another one")).status_code == 400
        log = await run_logs(storage, sent, reset, again)
    assert again.status_code == 400 and again.json()["body"]["status"] == "INVALID_RESET_TOKEN"
    assert token not in log and NEW_PASSWORD not in log and "yet another one" not in log


async def test_the_answer_is_the_same_for_an_unknown_email(tmp_path: Path, storage_url: str,
                                                           clock: Clock,
                                                           smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    async with gateway(tmp_path, storage_url, clock, port) as (client, _):
        await signup(client)
        known = await forgot(client, json={"email": "ada@example.com"})
        unknown = await forgot(client, json={"email": "who@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert known.json() == unknown.json()
    assert [m["To"] for m in inbox.messages] == ["ada@example.com"]


async def test_a_message_that_cannot_be_made_tells_nothing(
        tmp_path: Path, storage_url: str, clock: Clock, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    async with gateway(tmp_path, storage_url, clock, port) as (client, _):
        await signup(client)
        answers = [await forgot(client, json={"email": email, "subject": "a\r\nBcc: x@y"})
                   for email in ("ada@example.com", "who@example.com")]
    assert answers[0].status_code == answers[1].status_code
    assert answers[0].json()["body"]["status"] == answers[1].json()["body"]["status"]
    assert inbox.messages == []


async def test_an_smtp_server_down_tells_nothing_either(tmp_path: Path, storage_url: str,
                                                       clock: Clock) -> None:
    """The message goes after the answer: a known address whose e-mail cannot be sent gets
    the answer an unknown one gets (and as soon), the failure is only logged."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = int(probe.getsockname()[1])  # nothing listens there
    async with gateway(tmp_path, storage_url, clock, closed) as (client, _):
        await signup(client)
        known = await forgot(client, json={"email": "ada@example.com"})
        unknown = await forgot(client, json={"email": "who@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert known.json() == unknown.json()


@pytest.mark.parametrize("change", ["password", "email", "temp", "disable"])
async def test_a_credentials_change_ends_the_reset_links_sent_before(
        tmp_path: Path, storage_url: str, clock: Clock, smtp: tuple[Inbox, int],
        change: str) -> None:
    """A reset link read from an old mailbox, or an old e-mail, must not take the account
    back once the user has changed their password or address (or an admin has)."""
    inbox, port = smtp
    async with gateway(tmp_path, storage_url, clock, port) as (client, storage):
        ada = await signup(client)
        await forgot(client, json={"email": "ada@example.com"})
        token = inbox.token()
        if change == "password":
            changed = await client.post("/api/1.1/wf/change", headers=bearer(ada["token"]),
                                        json={"password": NEW_PASSWORD, "current": PASSWORD})
        elif change == "email":
            changed = await client.post("/api/1.1/wf/change", headers=bearer(ada["token"]),
                                        json={"email": "ada2@example.com",
                                              "current": PASSWORD})
        elif change == "temp":
            changed = await client.post("/api/1.1/wf/temp", headers=await admin(storage),
                                        json={"user": ada["user_id"]})
        else:
            assert await storage.users.disable_user(ada["user_id"], clock())
            changed = None
        assert changed is None or changed.status_code == 200, changed.text
        taken = await client.post("/api/1.1/wf/reset",
                                  json={"token": token, "password": "attacker pass 123"})
        assert taken.status_code == 400, taken.text
        assert taken.json()["body"]["status"] == "INVALID_RESET_TOKEN"
        for email in ("ada@example.com", "ada2@example.com"):
            assert (await login(client, email, "attacker pass 123")).status_code == 400


async def test_an_expired_token_and_another_users_token(tmp_path: Path, storage_url: str,
                                                        clock: Clock,
                                                        smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    async with gateway(tmp_path, storage_url, clock, port) as (client, _):
        await signup(client)
        await signup(client, "bo@example.com")
        await forgot(client, json={"email": "ada@example.com"})
        expired = inbox.token()
        clock.now += timedelta(hours=1, seconds=1)
        late = await client.post("/api/1.1/wf/reset",
                                 json={"token": expired, "password": NEW_PASSWORD})
        await forgot(client, json={"email": "ada@example.com"})
        adas = inbox.token()
        for_bo = await client.post("/api/1.1/wf/reset", json={
            "token": adas, "password": NEW_PASSWORD, "email": "bo@example.com"})
        made_up = await client.post("/api/1.1/wf/reset",
                                    json={"token": "x" * 43, "password": NEW_PASSWORD})
        assert (await login(client, "bo@example.com", NEW_PASSWORD)).status_code == 400
        assert (await login(client, "ada@example.com", NEW_PASSWORD)).status_code == 400
    for answer in (late, for_bo, made_up):
        assert answer.status_code == 400
        assert answer.json()["body"]["status"] == "INVALID_RESET_TOKEN"
    assert late.json() == for_bo.json() == made_up.json()


async def test_reset_emails_are_rate_limited_per_address(tmp_path: Path, storage_url: str,
                                                         clock: Clock,
                                                         smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    async with gateway(tmp_path, storage_url, clock, port) as (client, _):
        await signup(client)
        statuses = [(await forgot(client, json={
            "email": "ada@example.com"})).status_code for _ in range(4)]
        unknown = [(await forgot(client, json={
            "email": "who@example.com"})).status_code for _ in range(4)]
    assert statuses == unknown == [200, 200, 200, 429]
    assert len(inbox.messages) == 3


# --- logout_other_sessions, users with passwords made elsewhere, disabled users ---------------


async def test_logout_other_sessions_keeps_the_callers(tmp_path: Path, storage_url: str,
                                                       clock: Clock) -> None:
    async with gateway(tmp_path, storage_url, clock) as (client, _):
        first = await signup(client)
        others = [(await login(client, "ada@example.com", PASSWORD)).json()["response"]["token"]
                  for _ in range(2)]
        bo = await signup(client, "bo@example.com")
        answer = await client.post("/api/1.1/wf/others", headers=bearer(first["token"]))
        assert answer.status_code == 200, answer.text
        assert answer.json()["response"] == {"ended": 2}
        assert await works(client, first["token"]) and await works(client, bo["token"])
        assert not any([await works(client, token) for token in others])


async def test_create_thing_and_the_data_api_give_a_password(tmp_path: Path,
                                                             storage_url: str,
                                                             clock: Clock) -> None:
    async with gateway(tmp_path, storage_url, clock) as (client, storage):
        key = await admin(storage)
        made = await client.post("/api/1.1/wf/make_user", headers=key,
                                 json={"email": "cy@example.com", "password": NEW_PASSWORD})
        assert made.status_code == 200, made.text
        posted = await client.post("/api/1.1/obj/user", headers=key,
                                   json={"email": "di@example.com", "password": NEW_PASSWORD,
                                         "name": "Di"})
        assert posted.status_code == 201, posted.text
        taken = await client.post("/api/1.1/obj/user", headers=key,
                                  json={"email": "DI@example.com", "password": NEW_PASSWORD})
        assert (await login(client, "cy@example.com", NEW_PASSWORD)).status_code == 200
        assert (await login(client, "di@example.com", NEW_PASSWORD)).status_code == 200
        user = await storage.records.get("user", posted.json()["id"])
        log = await run_logs(storage, made, posted)
    assert user is not None and user["name"] == "Di" and "password" not in user
    assert taken.status_code == 400
    assert NEW_PASSWORD not in log


async def test_a_disabled_user_cannot_log_in_and_its_tokens_stop(tmp_path: Path,
                                                                 storage_url: str,
                                                                 clock: Clock) -> None:
    async with gateway(tmp_path, storage_url, clock) as (client, storage):
        ada = await signup(client)
        assert await storage.users.disable_user(ada["user_id"], clock())
        assert not await storage.users.disable_user(ada["user_id"], clock())
        clock.now += timedelta(seconds=5)  # past the credential cache
        assert not await works(client, ada["token"])
        refused = await login(client, "ada@example.com", PASSWORD)
        account = await storage.users.find_account("ADA@example.com")
    assert refused.status_code == 400
    assert refused.json()["body"]["status"] == "INVALID_LOGIN_CREDENTIALS"
    assert account is not None and account.disabled_at is not None and account.has_password


async def test_what_a_step_refuses(tmp_path: Path, storage_url: str, clock: Clock,
                                   smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    async with gateway(tmp_path, storage_url, clock, port) as (client, storage):
        ada = await signup(client)
        bo = await signup(client, "bo@example.com")
        note = await client.post("/api/1.1/wf/make_note", headers=await admin(storage))
        other = await client.post("/api/1.1/wf/change_other", headers=bearer(bo["token"]),
                                  json={"user": ada["user_id"]})
        link = await client.post("/api/1.1/wf/bad_link")
        anonymous = await client.post("/api/1.1/wf/others")
    assert note.status_code == 400 and note.json()["body"]["status"] == "INVALID_DATA"
    assert other.status_code == 403 and other.json()["body"]["status"] == "FORBIDDEN"
    assert link.status_code == 400 and "{token}" in link.json()["body"]["message"]
    assert anonymous.status_code == 401
    assert inbox.messages == []
