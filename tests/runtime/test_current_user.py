"""`current_user` through the user type's privacy rules, on SQLite and PostgreSQL: a
workflow gets the caller's record as the caller sees it, whether or not it has a step that
waits; the rules themselves, admin keys and `ignore_privacy_rules` see it whole."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conftest import Serve

from gateway.storage import Storage

CONFIG = """
kind: data_type
name: user
fields: {nickname: {type: text}, role: {type: text}}
privacy:
  - name: users see themselves, not their role
    when: "{{ thing._id == current_user._id }}"
    find_in_searches: true
    view_fields: [email, nickname]
---
kind: data_type
name: memo
fields: {text: {type: text}}
privacy:
  - name: editors find memos
    when: "{{ current_user.role == 'editor' }}"
    find_in_searches: true
    view_fields: all
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
    fields: {nickname: ada}
---
kind: api_workflow
name: me
expose: true
auth: user
steps:
  - action: return_data
    data: {me: "{{ current_user }}", keys: "{{ current_user | list | sort }}",
           role: "{{ current_user.role | default('hidden') }}"}
---
kind: api_workflow
name: me-after-a-search
expose: true
auth: user
steps:
  - {id: memos, action: search, type: memo}
  - action: return_data
    data: {me: "{{ current_user }}", memos: "{{ steps.memos.count }}"}
---
kind: api_workflow
name: me-changed
expose: true
auth: user
steps:
  - {id: changed, action: make_changes, type: user, thing: "{{ current_user }}",
     fields: {nickname: grace}}
  - {id: listed, action: make_changes_to_list, type: user, things: ["{{ current_user._id }}"],
     fields: {nickname: grace}}
  - {id: made, action: create_thing, type: memo, fields: {text: mine}}
  - action: return_data
    data: {changed: "{{ steps.changed }}", text: "{{ steps.changed | tojson }}",
           role: "{{ steps.changed.role | default('hidden') }}", listed: "{{ steps.listed }}",
           made: "{{ steps.made | list | sort }}"}
---
kind: api_workflow
name: me-whole
expose: true
auth: user
ignore_privacy_rules: true
steps:
  - action: return_data
    data: {me: "{{ current_user }}"}
"""


@dataclass
class World:
    client: httpx.AsyncClient
    storage: Storage
    token: str
    user_id: str


@pytest.fixture
async def world(serve: Serve, storage_url: str) -> AsyncIterator[World]:
    async with serve(CONFIG, storage_url) as gateway:
        client, storage = gateway.client, gateway.storage
        signed = (await client.post("/api/1.1/wf/signup",
                                    json={"email": "ada@example.com"})).json()["response"]
        await storage.records.update("user", signed["user_id"], {"role": "editor"})
        await storage.records.create("memo", {"text": "for editors"})
        yield World(client, storage, signed["token"], signed["user_id"])


async def _call(world: World, name: str) -> Any:
    answer = await world.client.post(f"/api/1.1/wf/{name}", json={},
                                     headers={"Authorization": f"Bearer {world.token}"})
    assert answer.status_code == 200, answer.text
    return answer.json()["response"]


async def test_a_workflow_with_no_waiting_step_gets_current_user_as_the_user_sees_it(
        world: World) -> None:
    answer = await _call(world, "me")
    assert answer["me"]["_id"] == world.user_id
    assert answer["me"]["nickname"] == "ada" and "role" not in answer["me"]
    assert answer["keys"] == ["_id", "_type", "email", "nickname"]
    assert answer["role"] == "hidden"  # not only the record: its fields, one by one


async def test_a_workflow_that_searches_gets_it_cut_too_while_the_rules_see_it_whole(
        world: World) -> None:
    answer = await _call(world, "me-after-a-search")
    assert "role" not in answer["me"] and answer["me"]["nickname"] == "ada"
    assert answer["memos"] == 1  # the memo rule read the hidden role


async def test_ignore_privacy_rules_sees_current_user_whole(world: World) -> None:
    me = (await _call(world, "me-whole"))["me"]
    assert me["role"] == "editor" and {"created_at", "modified_at"} <= set(me)


async def test_what_a_write_step_returns_is_cut_as_a_search_would_cut_it(world: World) -> None:
    """A record a step created or changed reaches the run's templates as the caller sees it:
    changing `current_user` does not hand back its hidden role."""
    answer = await _call(world, "me-changed")
    assert answer["changed"]["nickname"] == "grace" and "role" not in answer["changed"]
    assert "role" not in answer["text"] and "editor" not in answer["text"]
    assert answer["role"] == "hidden"
    assert [set(r) for r in answer["listed"]] == [{"_id", "_type", "email", "nickname"}]
    # memos show every field to editors; the role still decides it while the run writes
    assert answer["made"] == ["_id", "_type", "created_at", "created_by", "modified_at", "text"]
