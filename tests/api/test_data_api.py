"""Bubble's Data API (`/api/1.1/obj/<type>`) on SQLite and PostgreSQL: reading, searching
with every constraint type, paging, writing, bulk creation, the refusal matrix per identity,
and hostile input."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from conftest import Serve

from gateway.api.auth import key_hash, new_key
from gateway.storage import Storage

CONFIG = """
kind: data_type
name: lead
api: {expose: true}
fields:
  name: {type: text}
  email: {type: text, indexed: true}
  score: {type: number}
  tags: {type: text, list: true}
  seen: {type: date}
---
kind: data_type
name: secret_note          # not exposed
fields: {body: {type: text}}
---
kind: data_type
name: note
api: {expose: true}
fields:
  body: {type: text}
  owner: {type: user}
  locked: {type: boolean}
  hidden: {type: text}
privacy:
  - name: owners handle their notes, unless locked
    when: "{{ thing.owner == current_user._id and not thing.locked }}"
    find_in_searches: true
    view_fields: [body, owner, locked]
    create_via_api: true
    modify_via_api: true
    delete_via_api: true
  - name: owners see their locked notes
    when: "{{ thing.owner == current_user._id and thing.locked }}"
    find_in_searches: true
    view_fields: [body, owner, locked]
everyone_else:
  find_in_searches: true
  view_fields: [body]
"""
SIGNUP = """
kind: api_workflow
name: signup
expose: true
auth: none
params: {email: {type: text}}
steps:
  - {action: signup_user, email: "{{ params.email }}", password: correct horse battery}
"""


@dataclass
class Api:
    client: httpx.AsyncClient
    storage: Storage
    admin: dict[str, str]
    alice: dict[str, str]
    alice_id: str
    bob: dict[str, str]


@pytest.fixture
async def api(serve: Serve, storage_url: str) -> AsyncIterator[Api]:
    async with serve(f"{CONFIG}\n---\n{SIGNUP}", storage_url) as gateway:
        client, storage = gateway.client, gateway.storage
        key = new_key()
        await storage.keys.create_key("admin", key_hash(key), datetime.now(UTC))
        users = []
        for email in ("alice@x.io", "bob@x.io"):
            answer = (await client.post("/api/1.1/wf/signup", json={"email": email}))
            users.append(answer.json()["response"])
        yield Api(client, storage, _bearer(key), _bearer(users[0]["token"]),
                  users[0]["user_id"], _bearer(users[1]["token"]))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _create(api: Api, fields: dict[str, Any], type: str = "lead",
                  who: dict[str, str] | None = None) -> str:
    answer = await api.client.post(f"/api/1.1/obj/{type}", json=fields,
                                   headers=api.admin if who is None else who)
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "success"
    return str(answer.json()["id"])


async def _search(api: Api, constraints: list[dict[str, Any]], type: str = "lead",
                  who: dict[str, str] | None = None, **params: Any) -> httpx.Response:
    query = {"constraints": json.dumps(constraints), **params}
    return await api.client.get(f"/api/1.1/obj/{type}", params=query,
                                headers=api.admin if who is None else who)


async def test_create_get_change_replace_delete(api: Api) -> None:
    id = await _create(api, {"name": "Ada", "email": "ada@x.io", "score": 3,
                             "tags": ["a", "b"]})
    got = await api.client.get(f"/api/1.1/obj/lead/{id}", headers=api.admin)
    assert got.status_code == 200
    record = got.json()["response"]
    assert record["_id"] == id and record["name"] == "Ada" and record["score"] == 3
    assert {"Created Date", "Modified Date"} <= set(record) and "_type" not in record
    assert "seen" not in record  # empty fields are left out, as Bubble does
    patched = await api.client.patch(f"/api/1.1/obj/lead/{id}", json={"score": "7"},
                                     headers=api.admin)
    assert patched.status_code == 204 and patched.content == b""
    record = (await api.client.get(f"/api/1.1/obj/lead/{id}", headers=api.admin)).json()
    assert record["response"]["score"] == 7 and record["response"]["name"] == "Ada"
    put = await api.client.put(f"/api/1.1/obj/lead/{id}", json={"name": "Bea"},
                               headers=api.admin)
    assert put.status_code == 204
    record = (await api.client.get(f"/api/1.1/obj/lead/{id}", headers=api.admin)).json()
    assert record["response"]["name"] == "Bea" and "score" not in record["response"]
    assert (await api.client.delete(f"/api/1.1/obj/lead/{id}",
                                    headers=api.admin)).status_code == 204
    gone = await api.client.get(f"/api/1.1/obj/lead/{id}", headers=api.admin)
    assert gone.status_code == 404
    assert gone.json() == {"statusCode": 404, "body": {
        "status": "MISSING_DATA",
        "message": f"Missing object of type lead: object with id {id} does not exist"}}
    await api.storage.runs.flush_runs()
    runs = await api.storage.runs.list_runs(workflow="obj/lead", limit=50)
    assert len(runs) >= 6 and {r["source"] for r in runs} == {"data_api"}


async def test_every_constraint_type(api: Api) -> None:
    a = await _create(api, {"name": "Ada Lovelace", "email": "ada@x.io", "score": 10,
                            "tags": ["vip"], "seen": "2026-01-02T00:00:00Z"})
    b = await _create(api, {"name": "Bob", "email": "bob@x.io", "score": 5, "tags": []})
    c = await _create(api, {"email": "cy@x.io", "score": 1, "tags": ["vip", "new"]})
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"key": "email", "constraint_type": "equals", "value": "bob@x.io"}, {b}),
        ({"key": "email", "constraint_type": "not equal", "value": "bob@x.io"}, {a, c}),
        ({"key": "name", "constraint_type": "is_empty"}, {c}),
        ({"key": "name", "constraint_type": "is_not_empty"}, {a, b}),
        ({"key": "name", "constraint_type": "text contains", "value": "love"}, {a}),
        ({"key": "name", "constraint_type": "not text contains", "value": "love"}, {b, c}),
        ({"key": "score", "constraint_type": "greater than", "value": "4"}, {a, b}),
        ({"key": "score", "constraint_type": "less than", "value": "5"}, {c}),
        ({"key": "score", "constraint_type": "in", "value": ["1", "10"]}, {a, c}),
        ({"key": "score", "constraint_type": "not in", "value": ["1", "10"]}, {b}),
        ({"key": "tags", "constraint_type": "contains", "value": "vip"}, {a, c}),
        ({"key": "tags", "constraint_type": "not contains", "value": "vip"}, {b}),
        ({"key": "tags", "constraint_type": "empty"}, {b}),
        ({"key": "tags", "constraint_type": "not empty"}, {a, c}),
        ({"key": "seen", "constraint_type": "greater than", "value": "2026-01-01"}, {a}),
        ({"key": "_id", "constraint_type": "equals", "value": c}, {c}),
        ({"key": "Created Date", "constraint_type": "greater than",
          "value": "2000-01-01T00:00:00.000000Z"}, {a, b, c}),
    ]
    for constraint, expected in cases:
        answer = await _search(api, [constraint])
        assert answer.status_code == 200, (constraint, answer.text)
        found = {r["_id"] for r in answer.json()["response"]["results"]}
        assert found == expected, constraint


async def test_paging_with_a_numeric_cursor_and_sorting(api: Api) -> None:
    for score in range(7):
        await _create(api, {"name": f"n{score}", "score": score})
    seen: list[float] = []
    cursor = 0
    while True:
        answer = await _search(api, [], limit=3, cursor=cursor, sort_field="score",
                               descending="true")
        page = answer.json()["response"]
        assert page["cursor"] == cursor and page["count"] == len(page["results"])
        seen += [r["score"] for r in page["results"]]
        cursor += page["count"]
        if page["remaining"] == 0:
            break
    assert seen == [6, 5, 4, 3, 2, 1, 0]
    more = json.dumps([{"sort_field": "name", "descending": False}])
    answer = await _search(api, [], limit=2, sort_field="Created Date",
                           additional_sort_fields=more, exclude_remaining="true")
    page = answer.json()["response"]
    assert page["count"] == 2 and "remaining" not in page


async def test_unexposed_and_unknown_types_get_the_same_404(api: Api) -> None:
    for type in ("secretnote", "secret_note", "nothing", "lead_"):
        answer = await api.client.get(f"/api/1.1/obj/{type}", headers=api.admin)
        assert answer.status_code == 404 and answer.json()["body"]["status"] == "NOT_FOUND"
    unknown = await api.client.get("/api/1.1/obj/nothing/1", headers=api.admin)
    exposed_but_missing = await api.client.get("/api/1.1/obj/lead/1", headers=api.admin)
    assert unknown.status_code == exposed_but_missing.status_code == 404


async def test_unknown_fields_and_constraint_types(api: Api) -> None:
    answer = await api.client.post("/api/1.1/obj/lead", json={"nme": "x"}, headers=api.admin)
    assert answer.status_code == 400
    assert answer.json()["body"] == {"status": "ERROR", "message": "Unrecognized field: nme"}
    answer = await _search(api, [{"key": "nme", "constraint_type": "equals", "value": "x"}])
    assert answer.status_code == 400 and "Unrecognized field: nme" in answer.text
    answer = await _search(api, [{"key": "name", "constraint_type": "like", "value": "x"}])
    assert answer.status_code == 404 and answer.json()["body"]["status"] == "NOT_FOUND"
    answer = await _search(api, [{"key": "score", "constraint_type": "equals", "value": "x"}])
    assert answer.status_code == 400 and answer.json()["body"]["status"] == "INVALID_DATA"
    answer = await api.client.patch("/api/1.1/obj/lead/x", json={"_id": "y"},
                                    headers=api.admin)
    assert answer.status_code == 400 and "Unrecognized field: _id" in answer.text


async def test_bulk_creation(api: Api) -> None:
    lines = [json.dumps({"name": f"b{i}", "score": i}) for i in range(5)]
    lines.insert(2, "not json")
    lines.insert(3, json.dumps({"nope": 1}))
    answer = await api.client.post("/api/1.1/obj/lead/bulk", content="\n".join(lines),
                                   headers={**api.admin, "Content-Type": "text/plain"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    results = [json.loads(line) for line in answer.text.split("\n")]
    assert [r["status"] for r in results] == ["success"] * 2 + ["error"] * 2 + ["success"] * 3
    assert results[3]["message"] == "Unrecognized field: nope"
    count = await _search(api, [], limit=1)
    assert count.json()["response"]["remaining"] == 4
    wrong = await api.client.post("/api/1.1/obj/lead/bulk", json={"name": "x"},
                                  headers=api.admin)
    assert wrong.status_code == 400 and "text/plain" in wrong.json()["body"]["message"]
    too_many = "\n".join(json.dumps({"score": i}) for i in range(1001))
    answer = await api.client.post("/api/1.1/obj/lead/bulk", content=too_many,
                                   headers={**api.admin, "Content-Type": "text/plain"})
    assert answer.status_code == 400 and "1000" in answer.text
    assert (await _search(api, [], limit=1)).json()["response"]["remaining"] == 4


async def test_refusal_matrix(api: Api) -> None:
    """Each identity against each operation on a type with privacy rules."""
    # (`locked` never set: empty to the rules, so `not thing.locked` holds)
    mine = await _create(api, {"body": "mine", "hidden": "h", "owner": api.alice_id}, "note",
                         api.alice)
    other = await _create(api, {"body": "admin's", "hidden": "h"}, "note")
    # a user creates only what a rule lets them create (here: notes they own)
    for fields in ({"body": "x"}, {"body": "x", "owner": api.alice_id}):
        refused = await api.client.post("/api/1.1/obj/note", json=fields, headers=api.bob)
        _assert_refused(refused, "create", "note")
    anonymous = await api.client.post("/api/1.1/obj/note", json={"body": "x"})
    _assert_refused(anonymous, "create", "note")
    # alice sees her note's visible fields; the hidden one never shows
    got = (await api.client.get(f"/api/1.1/obj/note/{mine}", headers=api.alice)).json()
    assert got["response"]["owner"] == api.alice_id and "hidden" not in got["response"]
    assert "owner" not in (await api.client.get(f"/api/1.1/obj/note/{mine}",
                                                headers=api.bob)).json()["response"]
    owned = [{"key": "owner", "constraint_type": "equals", "value": api.alice_id}]
    found = (await _search(api, owned, "note", api.alice)).json()["response"]["results"]
    assert [(r["_id"], r["owner"]) for r in found] == [(mine, api.alice_id)]
    # nobody but admin finds by a hidden field
    hidden = [{"key": "hidden", "constraint_type": "equals", "value": "h"}]
    assert (await _search(api, hidden, "note", api.alice)).json()["response"]["results"] == []
    assert len((await _search(api, hidden, "note")).json()["response"]["results"]) == 2
    # changes: bob cannot, alice can (not the hidden field), and not out of her reach
    for who, fields, status in ((api.bob, {"body": "b"}, 401), (None, {"body": "a"}, 401),
                                (api.alice, {"hidden": "x"}, 401),
                                (api.alice, {"owner": None}, 401),
                                (api.alice, {"body": "changed"}, 204)):
        answer = await api.client.patch(f"/api/1.1/obj/note/{mine}", json=fields,
                                        headers=who or {})
        assert answer.status_code == status, (fields, answer.text)
        if status == 401:  # the same body whatever the reason: nothing hidden is named
            _assert_refused(answer, "modify", "note")
    assert (await api.client.put(f"/api/1.1/obj/note/{mine}", json={"body": "p"},
                                 headers=api.alice)).status_code == 401  # clears hidden
    # locking takes the note out of her `modify` rule: she can lock it once, not undo it
    lock = await api.client.patch(f"/api/1.1/obj/note/{mine}", json={"locked": True},
                                  headers=api.alice)
    assert lock.status_code == 401  # after the change, no rule lets her modify it
    for who, status in ((api.bob, 401), ({}, 401), (api.alice, 204)):
        answer = await api.client.delete(f"/api/1.1/obj/note/{mine}", headers=who)
        assert answer.status_code == status
    assert (await api.client.delete(f"/api/1.1/obj/note/{other}",
                                    headers=api.alice)).status_code == 401
    assert (await api.client.delete(f"/api/1.1/obj/note/{other}",
                                    headers=api.admin)).status_code == 204
    # writes to a type without privacy rules are for admin keys only
    _assert_refused(await api.client.post("/api/1.1/obj/lead", json={"name": "x"},
                                          headers=api.alice), "create", "lead")
    kept = await _create(api, {"body": "kept"}, "note")  # found by everyone, modified by none
    _assert_refused(await api.client.put(f"/api/1.1/obj/note/{kept}", json={"body": "x"},
                                         headers=api.bob), "modify", "note")
    # a credential that is not valid is no refusal by the rules: the envelope of every API
    bad = await api.client.get("/api/1.1/obj/lead", headers=_bearer("nonsense"))
    assert bad.status_code == 401 and bad.json()["body"]["status"] == "UNAUTHORIZED"


def _assert_refused(answer: httpx.Response, action: str, type: str) -> None:
    """Bubble's body for a write the privacy rules refuse, with our stable code in `args`."""
    assert answer.status_code == 401, answer.text
    sentence = (f"You are not allowed to {action} this {type} (privacy rules: "
                f"{action}_via_api)")
    assert answer.json() == {"error_class": "Unauthorized", "args": {"code": "UNAUTHORIZED"},
                             "message": sentence, "translation": sentence}
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-run-id"]


async def test_hostile_input(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    evil = "x\n[CRITICAL] forged\x1b[31m"
    cases: list[dict[str, Any]] = [
        {"constraints": "not json"}, {"constraints": json.dumps({"a": 1})},
        {"constraints": json.dumps(["x"])}, {"constraints": "[" * 20_000},
        {"constraints": json.dumps([{"key": evil, "constraint_type": "equals"}] * 101)},
        {"constraints": json.dumps([{"key": evil, "constraint_type": "equals", "value": 1}])},
        {"constraints": json.dumps([{"key": "name", "constraint_type": evil}])},
        {"constraints": json.dumps([{"key": "name", "constraint_type": "equals",
                                     "value": "\x00"}])},
        {"constraints": json.dumps([{"key": "score", "constraint_type": "in",
                                     "value": ["1", "x"]}])},
        {"constraints": json.dumps([{"key": "score", "constraint_type": "equals",
                                     "value": {"$gt": 1}}])},
        {"constraints": json.dumps([{"key": "score", "constraint_type": "greater than",
                                     "value": [1, 2]}])},
        {"constraints": json.dumps([{"key": 5, "constraint_type": "equals", "value": 1}])},
        {"constraints": json.dumps([{"key": "name", "constraint_type": None}])},
        {"constraints": json.dumps([{"key": "seen", "constraint_type": "less than",
                                     "value": "yesterday"}])},
        {"limit": "0"}, {"limit": "101"}, {"limit": "-1"}, {"limit": "x"},
        {"limit": "9" * 5000}, {"cursor": "-1"}, {"cursor": "9" * 30}, {"cursor": "1.5"},
        {"limit": "\u00b2"}, {"cursor": "\u0663"},  # digits to `isdigit()` only
        {"sort_field": evil}, {"additional_sort_fields": "[1]"},
        {"additional_sort_fields": json.dumps([{"sort_field": "name"}] * 11)},
    ]
    for params in cases:
        answer = await api.client.get("/api/1.1/obj/lead", params=params, headers=api.admin)
        assert 400 <= answer.status_code < 500, (params, answer.text)
        assert set(answer.json()) == {"statusCode", "body"}
    long_in = json.dumps([{"key": "name", "constraint_type": "in",
                           "value": [f"{i}{'x' * 100}" for i in range(150)]}])
    answer = await api.client.get("/api/1.1/obj/lead", params={"constraints": long_in},
                                  headers=api.admin)
    assert answer.status_code == 200 and answer.json()["response"]["results"] == []
    for body in (b"[1]", b"{", b"\xff\xfe", b'{"score": "abc"}'):
        answer = await api.client.post("/api/1.1/obj/lead", content=body,
                                       headers={**api.admin, "Content-Type": "application/json"})
        assert 400 <= answer.status_code < 500, (body, answer.text)
    answer = await api.client.post("/api/1.1/obj/lead/bulk", content=b"\xff\n{}",
                                   headers={**api.admin, "Content-Type": "text/plain"})
    assert answer.status_code == 400
    huge = b'{"name": "' + b"x" * 2_000_000 + b'"}'
    answer = await api.client.post("/api/1.1/obj/lead", content=huge, headers=api.admin)
    assert answer.status_code == 413
    assert (await api.client.request("OPTIONS", "/api/1.1/obj/lead")).status_code == 405
    assert (await api.client.get(f"/api/1.1/obj/lead/{'x' * 10_000}",
                                 headers=api.admin)).status_code == 404
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gateway"))
    assert "\n[CRITICAL] forged" not in ours and "\x1b" not in ours
    await api.storage.runs.flush_runs()
    rejected = await api.storage.runs.list_runs(workflow="obj/lead", status="rejected",
                                                limit=100)
    assert len(rejected) >= len(cases) + 6  # every refused search, body and bulk is recorded
    assert all(r["identity"]["kind"] == "admin" for r in rejected)
    assert (await _search(api, [], limit=1)).json()["response"]["count"] == 0


async def test_the_api_token_query_parameter_never_reaches_the_run_log(api: Api) -> None:
    key = api.admin["Authorization"].removeprefix("Bearer ")
    answer = await api.client.get("/api/1.1/obj/lead", params={"api_token": key, "limit": "1"})
    assert answer.status_code == 200 and answer.headers["x-run-id"]
    answer = await api.client.post(f"/api/1.1/obj/lead?api_token={key}", json={"name": "k"})
    assert answer.status_code == 201
    await api.storage.runs.flush_runs()
    runs = await api.storage.runs.list_runs(workflow="obj/lead")
    assert len(runs) == 2 and key not in repr(runs)


async def test_the_data_api_is_served_under_the_prefix(serve: Serve, storage_url: str) -> None:
    prefixed = f"{CONFIG}\n---\nkind: settings\nserver: {{prefix: /version-test}}\n"
    async with serve(prefixed, storage_url) as gateway:
        key = new_key()
        await gateway.storage.keys.create_key("admin", key_hash(key), datetime.now(UTC))
        client = gateway.client
        client.headers.update(_bearer(key))
        made = await client.post("/version-test/api/1.1/obj/lead", json={"name": "Ada"})
        assert made.status_code == 201, made.text
        found = await client.get(f"/version-test/api/1.1/obj/lead/{made.json()['id']}")
        assert found.status_code == 200 and found.json()["response"]["name"] == "Ada"
        assert (await client.get("/api/1.1/obj/lead")).status_code == 404  # not unprefixed
