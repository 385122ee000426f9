"""Privacy rules on SQLite and PostgreSQL, for each kind of caller: what searches find (in
the database and record by record), what get_thing and record parameters give, which fields
a run returns, and what the run log says the rules hid."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Serve

from gateway.api.auth import key_hash, new_key
from gateway.compiler.loader import load
from gateway.core.clock import utc_now
from gateway.core.errors import ConfigError

CONFIG = """
kind: data_type
name: note
fields:
  owner: {type: user}
  text: {type: text}
  mood: {type: text}
privacy:
  - name: owners see their notes
    when: "{{ thing.owner == current_user._id }}"
    find_in_searches: true
    view_fields: all
everyone_else: {find_in_searches: false, view_fields: [text]}
---
kind: data_type
name: board
fields:
  title: {type: text}
  public: {type: boolean}
  body: {type: text}
privacy:
  - name: public boards
    when: "{{ thing.public }}"
    find_in_searches: true
    view_fields: [title]
---
kind: api_workflow
name: add-note
expose: true
auth: user
params: {text: {type: text}, mood: {type: text, optional: true}}
steps:
  - id: note
    action: create_thing
    type: note
    fields: {owner: "{{ current_user._id }}", text: "{{ params.text }}", mood: "{{ params.mood }}"}
  - action: return_data
    data: "{{ steps.note }}"
---
kind: api_workflow
name: notes
expose: true
auth: none
params: {page: {type: integer, optional: true, default: 100}, cursor: {type: text, optional: true}}
steps:
  - id: found
    action: search
    type: note
    sort: [{key: text}]
    limit: "{{ params.page }}"
    cursor: "{{ params.cursor }}"
  - action: return_data
    data: {texts: "{{ steps.found.results | map(attribute='text') | list }}",
           count: "{{ steps.found.count }}", remaining: "{{ steps.found.remaining }}",
           first: "{{ steps.found.results[0] if steps.found.results else none }}"}
---
kind: api_workflow
name: note
expose: true
auth: none
params: {id: {type: text}}
steps:
  - id: got
    action: get_thing
    type: note
    thing: "{{ params.id }}"
  - action: return_data
    data: {note: "{{ steps.got }}"}
---
kind: api_workflow
name: note-param
expose: true
auth: none
params: {note: {type: note}}
steps:
  - action: return_data
    data: {note: "{{ params.note }}"}
---
kind: api_workflow
name: all-notes
expose: true
auth: none
ignore_privacy_rules: true
allow_public_privileged: true
steps:
  - id: found
    action: search
    type: note
  - action: return_data
    data: {count: "{{ steps.found.count }}"}
---
kind: api_workflow
name: add-board
expose: true
auth: admin
params: {title: {type: text}, public: {type: boolean}}
steps:
  - action: create_thing
    type: board
    fields: {title: "{{ params.title }}", public: "{{ params.public }}", body: secret body}
---
kind: api_workflow
name: boards
expose: true
auth: none
params: {page: {type: integer, optional: true, default: 100}, cursor: {type: text, optional: true}}
steps:
  - id: found
    action: search
    type: board
    sort: [{key: title}]
    limit: "{{ params.page }}"
    cursor: "{{ params.cursor }}"
  - action: return_data
    data: {boards: "{{ steps.found.results }}", count: "{{ steps.found.count }}",
           cursor: "{{ steps.found.cursor }}"}
---
kind: api_workflow
name: users
expose: true
auth: none
steps:
  - id: found
    action: search
    type: user
  - action: return_data
    data: {emails: "{{ steps.found.results | map(attribute='email') | list }}"}
---
kind: data_type
name: post
api: {expose: true}
fields: {owner: {type: user}, text: {type: text}}
privacy:
  - name: owners see all of their posts
    when: "{{ thing.owner == current_user._id }}"
    find_in_searches: true
    view_fields: all
everyone_else: {find_in_searches: true, view_fields: [text, created_at]}
---
kind: api_workflow
name: add-post
expose: true
auth: user
params: {text: {type: text}}
steps:
  - id: post
    action: create_thing
    type: post
    fields: {owner: "{{ current_user._id }}", text: "{{ params.text }}"}
  - action: return_data
    data: "{{ steps.post }}"
---
kind: api_workflow
name: posts-by
expose: true
auth: none
params: {by: {type: text}}
steps:
  - id: found
    action: search
    type: post
    constraints: [{key: created_by, constraint: equals, value: "{{ params.by }}"}]
  - action: return_data
    data: {posts: "{{ steps.found.results }}"}
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


async def call(client: httpx.AsyncClient, name: str, token: str | None = None,
               **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = await client.post(f"/api/1.1/wf/{name}", json=params, headers=headers)
    assert answer.status_code == 200, (name, answer.text)
    return answer.json()["response"]


@pytest.fixture
async def world(serve: Serve, storage_url: str) -> AsyncIterator[dict[str, Any]]:
    """Two users with two notes each, an admin key, and the client."""
    async with serve(CONFIG, storage_url) as gateway:
        client, storage = gateway.client, gateway.storage
        ada = (await call(client, "signup", email="ada@example.com"))["token"]
        bo = (await call(client, "signup", email="bo@example.com"))["token"]
        admin = new_key()
        await storage.keys.create_key("ops", key_hash(admin), utc_now())
        notes = {}
        for token, texts in ((ada, ["a1", "a2"]), (bo, ["b1", "b2"])):
            for text in texts:
                notes[text] = (await call(client, "add-note", token, text=text, mood="sad"))
        yield {"client": client, "storage": storage, "ada": ada, "bo": bo, "admin": admin,
               "notes": notes}


async def test_searches_find_what_the_rules_grant_each_caller(world: dict[str, Any]) -> None:
    client = world["client"]
    assert (await call(client, "notes"))["texts"] == []  # anonymous
    ada = await call(client, "notes", world["ada"])
    assert (ada["texts"], ada["count"]) == (["a1", "a2"], 2)
    assert ada["first"]["mood"] == "sad"  # all fields of their own
    assert (await call(client, "notes", world["bo"]))["texts"] == ["b1", "b2"]
    assert (await call(client, "notes", world["admin"]))["texts"] == ["a1", "a2", "b1", "b2"]
    assert (await call(client, "all-notes"))["count"] == 4  # ignore_privacy_rules


async def test_paging_through_rules_applied_in_the_database(world: dict[str, Any]) -> None:
    client = world["client"]
    first = await call(client, "notes", world["ada"], page=1)
    assert (first["texts"], first["count"], first["remaining"]) == (["a1"], 2, 1)


async def test_the_run_log_says_how_many_matches_the_rules_hid(world: dict[str, Any]) -> None:
    client, storage = world["client"], world["storage"]
    await call(client, "notes", world["ada"])
    await storage.runs.flush_runs()
    (run,) = await storage.runs.list_runs(workflow="notes", limit=1)
    assert run["steps"][0]["hidden_by_privacy"] == 2


async def test_get_thing_and_record_parameters(world: dict[str, Any]) -> None:
    client = world["client"]
    a1 = world["notes"]["a1"]["_id"]
    mine = await call(client, "note", world["ada"], id=a1)
    assert mine["note"]["text"] == "a1" and mine["note"]["mood"] == "sad"
    assert (await call(client, "note", world["bo"], id=a1)) == {"note": None}
    assert (await call(client, "note", id=a1)) == {"note": None}
    refused = await client.post("/api/1.1/wf/note-param", json={"note": a1},
                                headers={"Authorization": f"Bearer {world['bo']}"})
    missing = await client.post("/api/1.1/wf/note-param", json={"note": "1x1"},
                                headers={"Authorization": f"Bearer {world['bo']}"})
    assert refused.status_code == missing.status_code == 400
    assert refused.json()["body"]["message"] == missing.json()["body"]["message"]
    assert (await call(client, "note-param", world["ada"], note=a1))["note"]["mood"] == "sad"


async def test_records_found_record_by_record_show_only_their_fields(world: dict[str, Any]) -> None:
    client = world["client"]
    for i, public in enumerate([True, False, True, True]):
        await call(client, "add-board", world["admin"], title=f"t{i}", public=public)
    found = await call(client, "boards")
    assert found["count"] == 3
    assert [b["title"] for b in found["boards"]] == ["t0", "t2", "t3"]
    assert all("body" not in b and "public" not in b and "_id" in b for b in found["boards"])
    page = await call(client, "boards", page=2)
    rest = await call(client, "boards", page=2, cursor=page["cursor"])
    assert [b["title"] for b in page["boards"] + rest["boards"]] == ["t0", "t2", "t3"]
    everything = await call(client, "boards", world["admin"])
    assert everything["count"] == 4 and everything["boards"][0]["body"] == "secret body"


async def test_users_find_only_themselves_by_default(world: dict[str, Any]) -> None:
    client = world["client"]
    assert (await call(client, "users"))["emails"] == []
    assert (await call(client, "users", world["ada"]))["emails"] == ["ada@example.com"]
    assert len((await call(client, "users", world["admin"]))["emails"]) == 2


async def test_rules_hide_who_made_a_record_and_when_as_any_field(world: dict[str, Any]) -> None:
    client, ada, bo = world["client"], world["ada"], world["bo"]
    post = await call(client, "add-post", ada, text="hello")
    author = post["created_by"]
    assert {"owner", "created_by", "created_at", "modified_at"} <= set(post)  # her own
    mine = (await call(client, "posts-by", ada, by=author))["posts"]
    assert [p["_id"] for p in mine] == [post["_id"]] and mine[0]["created_by"] == author
    # Bo sees the text and the date, not who wrote it: and a search on the hidden creator
    # does not match (it would tell who wrote the post).
    assert (await call(client, "posts-by", bo, by=author))["posts"] == []
    got = await client.get(f"/api/1.1/obj/post/{post['_id']}", headers=_bearer(bo))
    assert set(got.json()["response"]) == {"_id", "text", "Created Date"}
    found = await client.get("/api/1.1/obj/post", headers=_bearer(bo), params={
        "constraints": json.dumps([{"key": "Created By", "constraint_type": "equals",
                                    "value": author}])})
    assert found.json()["response"]["results"] == []
    everything = (await client.get("/api/1.1/obj/post", headers=_bearer(bo))).json()
    assert [set(p) for p in everything["response"]["results"]] == [
        {"_id", "text", "Created Date"}]
    own = await client.get(f"/api/1.1/obj/post/{post['_id']}", headers=_bearer(ada))
    assert {"Created By", "Created Date", "Modified Date", "owner"} <= set(
        own.json()["response"])


def test_view_fields_name_system_fields_or_declared_ones(tmp_path: Path) -> None:
    path = tmp_path / "types.yaml"
    path.write_text(textwrap.dedent("""
        kind: data_type
        name: post
        fields: {text: {type: text}}
        everyone_else: {find_in_searches: true, view_fields: [text, created_by, modified]}
        """).strip())
    with pytest.raises(ConfigError) as refused:
        load([path])
    (problem,) = refused.value.diagnostics
    assert (problem.code, problem.pointer) == ("ref.unknown-field",
                                               "/everyone_else/view_fields/2")
    assert "did you mean 'modified_at'?" in problem.message


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
