"""What a caller cannot do to users, keys and privacy rules, on both backends: learn a hidden
field through a search's constraints or sort, get a record back uncut, log in to a deleted
account, be kept from signing up by a stale account, or see a bearer token in a template."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner
from conftest import served

from gateway.api.auth import key_hash, new_key
from gateway.cli import main
from gateway.core.clock import utc_now
from gateway.core.settings import Settings
from gateway.runtime.accounts import FREE_FAILURES, MAX_PASSWORD, MAX_TRACKED, Accounts
from gateway.storage import Storage

CONFIG = """
kind: data_type
name: vault
fields:
  title: {type: text}
  pin: {type: text}
  public: {type: boolean}
privacy:
  - name: public vaults show their title
    when: "{{ thing.public }}"
    find_in_searches: true
    view_fields: [title]
---
kind: data_type
name: memo
fields:
  owner: {type: user}
  title: {type: text}
  pin: {type: text}
privacy:
  - name: owners find their memos, and see their titles
    when: "{{ thing.owner == current_user._id }}"
    find_in_searches: true
    view_fields: [title]
---
kind: api_workflow
name: add-vault
expose: true
auth: admin
params: {title: {type: text}, pin: {type: text}, public: {type: boolean}}
steps:
  - id: made
    action: create_thing
    type: vault
    fields: {title: "{{ params.title }}", pin: "{{ params.pin }}", public: "{{ params.public }}"}
  - action: return_data
    data: {id: "{{ steps.made._id }}"}
---
kind: api_workflow
name: vault-pin-is
expose: true
auth: none
params: {pin: {type: text}}
steps:
  - id: found
    action: search
    type: vault
    constraints: [{key: pin, constraint: equals, value: "{{ params.pin }}"}]
  - action: return_data
    data: {count: "{{ steps.found.count }}"}
---
kind: api_workflow
name: vaults-by-pin
expose: true
auth: none
steps:
  - id: found
    action: search
    type: vault
    sort: [{key: pin}]
  - action: return_data
    data: {titles: "{{ steps.found.results | map(attribute='title') | list }}"}
---
kind: api_workflow
name: add-memo
expose: true
auth: user
params: {title: {type: text}, pin: {type: text}}
steps:
  - action: create_thing
    type: memo
    fields: {owner: "{{ current_user._id }}", title: "{{ params.title }}", pin: "{{ params.pin }}"}
---
kind: api_workflow
name: memo-pin-is
expose: true
auth: user
params: {pin: {type: text}}
steps:
  - id: found
    action: search
    type: memo
    constraints: [{key: pin, constraint: equals, value: "{{ params.pin }}"}]
  - action: return_data
    data: {count: "{{ steps.found.count }}"}
---
kind: api_workflow
name: signup
expose: true
auth: none
params: {email: {type: text}}
steps:
  - action: signup_user
    email: "{{ params.email }}"
    password: correct horse
"""


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, url: str,
                  extra: str = "") -> AsyncIterator[tuple[httpx.AsyncClient, Storage]]:
    config = textwrap.dedent(CONFIG).strip() + ("\n---\n" + extra if extra else "")
    async with served(config, url, home=tmp_path) as gateway:
        yield gateway.client, gateway.storage


async def post(client: httpx.AsyncClient, name: str, token: str | None = None,
               **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await client.post(f"/api/1.1/wf/{name}", json=params, headers=headers)


async def call(client: httpx.AsyncClient, name: str, token: str | None = None,
               **params: Any) -> Any:
    answer = await post(client, name, token, **params)
    assert answer.status_code == 200, (name, answer.text)
    return answer.json()["response"]


async def admin_key(storage: Storage) -> str:
    key = new_key()
    await storage.keys.create_key("ops", key_hash(key), utc_now())
    return key


async def test_a_constraint_on_a_hidden_field_does_not_tell_its_value(
        tmp_path: Path, storage_url: str) -> None:
    async with serving(tmp_path, storage_url) as (client, storage):
        key = await admin_key(storage)
        await call(client, "add-vault", key, title="v", pin="4711", public=True)
        right = await call(client, "vault-pin-is", pin="4711")
        wrong = await call(client, "vault-pin-is", pin="0000")
        assert (await call(client, "vault-pin-is", key, pin="4711"))["count"] == 1
    assert right == wrong  # the answer does not depend on the hidden pin


async def test_a_sort_on_a_hidden_field_does_not_tell_its_order(
        tmp_path: Path, storage_url: str) -> None:
    async with serving(tmp_path, storage_url) as (client, storage):
        key = await admin_key(storage)
        for title, pin in (("a", "3"), ("b", "1"), ("c", "2")):
            await call(client, "add-vault", key, title=title, pin=pin, public=True)
        shown = (await call(client, "vaults-by-pin"))["titles"]
        everything = (await call(client, "vaults-by-pin", key))["titles"]
    assert everything == ["b", "c", "a"]
    assert shown == []  # a search sorted on a hidden field finds nothing: its order would tell


async def test_a_constraint_on_a_field_the_database_rule_hides(
        tmp_path: Path, storage_url: str) -> None:
    async with serving(tmp_path, storage_url) as (client, _):
        token = (await call(client, "signup", email="ada@example.com"))["token"]
        await call(client, "add-memo", token, title="m", pin="4711")
        right = await call(client, "memo-pin-is", token, pin="4711")
        wrong = await call(client, "memo-pin-is", token, pin="0000")
    assert right == wrong


CUT = """
kind: api_workflow
name: reuse
expose: true
auth: none
params: {id: {type: text}}
steps:
  - id: found
    action: search
    type: vault
    limit: 1
  - id: changed
    action: make_changes
    type: vault
    thing: "{{ params.id }}"
    fields: {title: changed}
  - action: return_data
    data: {found: "{{ steps.found.count }}", changed: "{{ steps.changed }}"}
"""


async def test_a_record_a_run_returns_is_cut_however_memory_is_reused(
        tmp_path: Path, storage_url: str) -> None:
    async with serving(tmp_path, storage_url, CUT) as (client, storage):
        key = await admin_key(storage)
        ids = [(await call(client, "add-vault", key, title=f"t{i}", pin="4711",
                           public=True))["id"] for i in range(30)]
        for id in ids:
            changed = (await call(client, "reuse", id=id))["changed"]
            assert "pin" not in changed and "public" not in changed, changed


USERS = """
kind: api_workflow
name: login
expose: true
auth: none
params: {email: {type: text}, password: {type: text}}
steps:
  - action: login_user
    email: "{{ params.email }}"
    password: "{{ params.password }}"
---
kind: api_workflow
name: join
expose: true
auth: none
params: {email: {type: text}, password: {type: text}}
steps:
  - action: signup_user
    email: "{{ params.email }}"
    password: "{{ params.password }}"
---
kind: api_workflow
name: drop-user
expose: true
auth: admin
params: {id: {type: text}}
steps:
  - action: delete_thing
    type: user
    thing: "{{ params.id }}"
---
kind: api_workflow
name: add-user
expose: true
auth: admin
params: {email: {type: text}}
steps:
  - action: create_thing
    type: user
    fields: {email: "{{ params.email }}"}
---
kind: api_workflow
name: headers
expose: true
auth: none
steps:
  - action: return_data
    data: {headers: "{{ request.headers | list }}"}
"""
PASSWORD = "correct horse"


async def test_a_deleted_user_cannot_log_in_and_the_email_is_free_again(
        tmp_path: Path, storage_url: str) -> None:
    async with serving(tmp_path, storage_url, USERS) as (client, storage):
        key = await admin_key(storage)
        user_id = (await call(client, "signup", email="ada@example.com"))["user_id"]
        await call(client, "drop-user", key, id=user_id)
        login = await post(client, "login", email="ada@example.com", password=PASSWORD)
        assert login.status_code == 400, login.text
        assert login.json()["body"]["status"] == "INVALID_LOGIN_CREDENTIALS"
        again = await post(client, "join", email="ada@example.com", password=PASSWORD)
        assert again.status_code == 200, again.text
        relogin = await call(client, "login", email="ada@example.com", password=PASSWORD)
    assert relogin["user_id"] == again.json()["response"]["user_id"] != user_id


async def test_signup_over_a_user_record_made_by_create_thing(
        tmp_path: Path, storage_url: str) -> None:
    async with serving(tmp_path, storage_url, USERS) as (client, storage):
        key = await admin_key(storage)
        await call(client, "add-user", key, email="ada@example.com")
        answer = await post(client, "join", email="ada@example.com", password=PASSWORD)
    assert answer.status_code == 400, answer.text
    assert answer.json()["body"]["status"] == "USED_EMAIL"


async def test_an_email_the_database_cannot_hold(tmp_path: Path, storage_url: str) -> None:
    async with serving(tmp_path, storage_url, USERS) as (client, _):
        signup = await post(client, "join", email="a\x00b@example.com", password=PASSWORD)
        login = await post(client, "login", email="a\x00b@example.com", password=PASSWORD)
    assert signup.status_code == login.status_code == 400, (signup.text, login.text)
    assert signup.json()["body"]["status"] == login.json()["body"]["status"] == "INVALID_DATA"


async def test_the_bearer_token_is_not_among_the_request_headers(
        tmp_path: Path, storage_url: str) -> None:
    async with serving(tmp_path, storage_url, USERS) as (client, _):
        token = (await call(client, "signup", email="ada@example.com"))["token"]
        seen = (await call(client, "headers", token))["headers"]
    assert "authorization" not in seen and "host" in seen



async def test_a_password_longer_than_any_kept_does_not_log_in(
        tmp_path: Path, storage_url: str) -> None:
    longest = "p" * MAX_PASSWORD
    async with serving(tmp_path, storage_url, USERS) as (client, _):
        await call(client, "join", email="ada@example.com", password=longest)
        assert (await post(client, "login", email="ada@example.com",
                           password=longest)).status_code == 200
        longer = await post(client, "login", email="ada@example.com", password=longest + "x")
    assert longer.status_code == 400, longer.text
    assert longer.json()["body"]["status"] == "INVALID_LOGIN_CREDENTIALS"


async def test_signups_racing_for_one_email(tmp_path: Path, storage_url: str) -> None:
    async with serving(tmp_path, storage_url, USERS) as (client, storage):
        answers = await asyncio.gather(*(
            post(client, "join", email=f"{case}@example.com", password=PASSWORD)
            for case in ("ada", "ADA", "Ada", "aDa", "adA", "AdA")))
        statuses = sorted(a.json().get("body", {}).get("status", "ok") for a in answers)
        users = await storage.records.search("user", [], [], 10, None)
    assert statuses == ["USED_EMAIL"] * 5 + ["ok"], [a.text for a in answers]
    assert users.count == 1


async def test_failures_for_other_emails_do_not_forget_one_being_guessed(
        storage: Storage) -> None:
    emails = Accounts(storage.users, Settings()).logins.emails
    for _ in range(FREE_FAILURES + 2):
        emails.failed("ada@example.com")
    slowed = emails.delay_for("ada@example.com")
    for index in range(MAX_TRACKED + 1):
        emails.failed(f"x{index}@example.com")
    assert slowed > 0 and emails.delay_for("ada@example.com") == slowed


def test_key_labels_cannot_forge_lines_of_the_list(tmp_path: Path, storage_url: str) -> None:
    config = tmp_path / "wf.yaml"
    config.write_text(textwrap.dedent(CONFIG).strip())

    def keys(*args: str) -> Any:
        return CliRunner().invoke(main, ["keys", *args, "--config", str(config),
                                         "--database", storage_url])

    forged = "ci\nprod                     created 2026-01-01 00:00  last used never  REVOKED"
    for label in ("ci\nprod", "ci\x1b[2J", "ci\x00"):
        made = keys("create", "--label", label)
        assert made.exit_code == 2 and "label" in made.output, (label, made.output)
    assert keys("create", "--label", forged).exit_code == 2
    assert keys("list").stdout == ""


SHORT_NAMES = """
kind: api_workflow
name: enrol
expose: true
auth: none
params: {mail: {type: text}, pw: {type: text}}
steps:
  - action: signup_user
    email: "{{ params.mail }}"
    password: "{{ params.pw }}"
---
kind: api_workflow
name: enter
expose: true
auth: none
params: {mail: {type: text}, pw: {type: text}}
steps:
  - action: login_user
    email: "{{ params.mail }}"
    password: "{{ params.pw }}"
"""


async def test_passwords_stay_out_of_the_run_log_whatever_their_parameter_is_called(
        tmp_path: Path, storage_url: str) -> None:
    secret = "hunter2 but longer"
    async with serving(tmp_path, storage_url, SHORT_NAMES) as (client, storage):
        await call(client, "enrol", mail="ada@example.com", pw=secret)
        await call(client, "enter", mail="ada@example.com", pw=secret)
        wrong = await post(client, "enter", mail="ada@example.com", pw=secret + "!")
        assert wrong.status_code == 400
        await storage.runs.flush_runs()
        runs = await storage.runs.list_runs(limit=10)
    assert len(runs) == 3
    assert secret not in repr(runs)
