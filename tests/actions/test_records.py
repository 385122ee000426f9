"""Record actions end to end through HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import Serve

from gateway.storage import Constraint, Storage

CONFIG = """
kind: data_type
name: lead
fields:
  name: {type: text, indexed: true}
  email: {type: text, unique: true}
  score: {type: number, default: 0}
  visits: {type: integer, default: 1}
  active: {type: boolean, default: true}
  tags: {type: text, list: true}
  seen_at: {type: date}
---
kind: api_workflow
name: create-lead
expose: true
auth: none
params:
  name: {type: text}
  email: {type: text}
  tags: {type: text, list: true, optional: true}
steps:
  - id: lead
    action: create_thing
    type: lead
    fields: {name: "{{ params.name }}", email: "{{ params.email }}", tags: "{{ params.tags }}"}
  - action: return_data
    data: "{{ steps.lead }}"
---
kind: api_workflow
name: create-scored
expose: true
auth: none
params:
  name: {type: text}
  score: {type: text}
  seen_at: {type: date, optional: true}
steps:
  - id: lead
    action: create_thing
    type: lead
    fields: {name: "{{ params.name }}", score: "{{ params.score }}",
             seen_at: "{{ params.seen_at }}"}
  - action: return_data
    data: "{{ steps.lead }}"
---
kind: api_workflow
name: get-lead
expose: true
auth: none
params: {id: {type: text}}
steps:
  - id: found
    action: get_thing
    type: lead
    thing: "{{ params.id }}"
  - action: return_data
    data: {found: "{{ steps.found }}"}
---
kind: api_workflow
name: rename
expose: true
auth: none
params: {lead: {type: lead}, name: {type: text}}
steps:
  - id: changed
    action: make_changes
    type: lead
    thing: "{{ params.lead }}"
    fields: {name: "{{ params.name }}"}
  - action: return_data
    data: {before: "{{ params.lead.name }}", after: "{{ steps.changed }}"}
---
kind: api_workflow
name: rename-by-id
expose: true
auth: none
params: {id: {type: text}, name: {type: text}}
steps:
  - id: changed
    action: make_changes
    type: lead
    thing: "{{ params.id }}"
    fields: {name: "{{ params.name }}"}
  - action: return_data
    data: "{{ steps.changed }}"
---
kind: api_workflow
name: create-then-change
expose: true
auth: none
params: {name: {type: text}}
steps:
  - id: created
    action: create_thing
    type: lead
    fields: {name: "{{ params.name }}"}
  - id: changed
    action: make_changes
    type: lead
    thing: "{{ steps.created }}"
    fields: {visits: 5, tags: [changed]}
  - action: return_data
    data: {created: "{{ steps.created }}", changed: "{{ steps.changed }}"}
---
kind: api_workflow
name: rescore-tagged
expose: true
auth: none
params: {tag: {type: text}, score: {type: number}}
steps:
  - id: found
    action: search
    type: lead
    constraints: [{key: tags, constraint: contains, value: "{{ params.tag }}"}]
  - id: changed
    action: make_changes_to_list
    type: lead
    things: "{{ steps.found }}"
    fields: {score: "{{ params.score }}"}
  - action: return_data
    data: {changed: "{{ steps.changed | length }}"}
---
kind: api_workflow
name: remove
expose: true
auth: none
params: {lead: {type: lead}}
steps:
  - id: gone
    action: delete_thing
    type: lead
    thing: "{{ params.lead }}"
  - action: return_data
    data: "{{ steps.gone }}"
---
kind: api_workflow
name: remove-tagged
expose: true
auth: none
params: {tag: {type: text}}
steps:
  - id: found
    action: search
    type: lead
    constraints: [{key: tags, constraint: contains, value: "{{ params.tag }}"}]
  - id: gone
    action: delete_list
    type: lead
    things: "{{ steps.found.results }}"
  - action: return_data
    data: "{{ steps.gone }}"
---
kind: api_workflow
name: find
expose: true
auth: none
params:
  min_score: {type: number}
  part: {type: text}
  excluded: {type: text, list: true, optional: true, default: []}
  limit: {type: integer, optional: true, default: 2}
  cursor: {type: text, optional: true}
steps:
  - id: found
    action: search
    type: lead
    constraints:
      - {key: score, constraint: greater_than, value: "{{ params.min_score }}"}
      - {key: name, constraint: text_contains, value: "{{ params.part }}"}
      - {key: active, constraint: equals, value: true}
      - {key: name, constraint: not_in, value: "{{ params.excluded }}"}
    sort: [{key: score, descending: true}, {key: name}]
    limit: "{{ params.limit }}"
    cursor: "{{ params.cursor }}"
  - action: return_data
    data:
      names: "{{ steps.found.results | map(attribute='name') | list }}"
      count: "{{ steps.found.count }}"
      remaining: "{{ steps.found.remaining }}"
      cursor: "{{ steps.found.cursor }}"
---
kind: api_workflow
name: tolerant-create
expose: true
auth: none
params: {email: {type: text}}
steps:
  - id: lead
    action: create_thing
    on_error: continue
    type: lead
    fields: {name: tolerant, email: "{{ params.email }}"}
  - action: return_data
    data: {created: "{{ steps.lead is not none }}"}
"""


@dataclass
class Gateway:
    client: httpx.AsyncClient
    storage: Storage

    async def post(self, name: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return await self.client.post(f"/api/1.1/wf/{name}", json=body or {})

    async def ok(self, name: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.post(name, body)
        assert response.status_code == 200, response.text
        return response.json()["response"]

    async def run_log(self, response: httpx.Response) -> dict[str, Any]:
        await self.storage.runs.flush_runs()
        logged = await self.storage.runs.get_run(response.headers["X-Run-Id"])
        assert logged is not None
        return logged


@pytest.fixture
async def gw(serve: Serve, storage_url: str) -> AsyncIterator[Gateway]:
    async with serve(CONFIG, storage_url) as served:
        yield Gateway(served.client, served.storage)


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["statusCode"] == status and body["body"]["status"] == code
    return str(body["body"]["message"])


async def test_create_thing_applies_defaults(gw: Gateway) -> None:
    lead = await gw.ok("create-lead", {"name": "Ada", "email": "ada@example.com",
                                       "tags": ["vip"]})
    assert lead["name"] == "Ada" and lead["email"] == "ada@example.com"
    assert lead["score"] == 0 and lead["visits"] == 1 and lead["active"] is True
    assert lead["tags"] == ["vip"]
    assert lead["_type"] == "lead" and lead["_id"]
    assert lead["created_at"] and lead["modified_at"]
    assert "created_by" in lead
    stored = await gw.storage.records.get("lead", lead["_id"])
    assert stored is not None and stored["name"] == "Ada" and stored["score"] == 0


async def test_get_thing(gw: Gateway) -> None:
    lead = await gw.ok("create-lead", {"name": "Bo", "email": "bo@example.com"})
    found = await gw.ok("get-lead", {"id": lead["_id"]})
    assert found["found"]["_id"] == lead["_id"] and found["found"]["name"] == "Bo"
    assert await gw.ok("get-lead", {"id": "1714557600000x000000000000000000"}) == {
        "found": None}


async def test_make_changes_by_id_and_from_a_record_parameter(gw: Gateway) -> None:
    lead = await gw.ok("create-lead", {"name": "Cy", "email": "cy@example.com"})
    changed = await gw.ok("rename-by-id", {"id": lead["_id"], "name": "Cyril"})
    assert changed["_id"] == lead["_id"] and changed["name"] == "Cyril"
    assert changed["email"] == "cy@example.com"
    renamed = await gw.ok("rename", {"lead": lead["_id"], "name": "Cy2"})
    assert renamed["before"] == "Cyril"
    assert renamed["after"]["name"] == "Cy2"
    stored = await gw.storage.records.get("lead", lead["_id"])
    assert stored is not None and stored["name"] == "Cy2"


async def test_make_changes_from_an_earlier_steps_record(gw: Gateway) -> None:
    got = await gw.ok("create-then-change", {"name": "Di"})
    assert got["created"]["visits"] == 1
    assert got["changed"]["_id"] == got["created"]["_id"]
    assert got["changed"]["visits"] == 5 and got["changed"]["tags"] == ["changed"]
    assert got["changed"]["name"] == "Di"


async def test_make_changes_to_list(gw: Gateway) -> None:
    for i, tags in enumerate([["a"], ["a", "b"], ["b"]]):
        await gw.ok("create-lead", {"name": f"n{i}", "email": f"{i}@x.io", "tags": tags})
    assert await gw.ok("rescore-tagged", {"tag": "a", "score": 9.5}) == {"changed": 2}
    scores = {r["name"]: r["score"] for r in (await gw.storage.records.search("lead")).results}
    assert scores == {"n0": 9.5, "n1": 9.5, "n2": 0}


async def test_delete_thing_and_delete_list(gw: Gateway) -> None:
    ids = []
    for i, tags in enumerate([["x"], ["x"], ["y"], []]):
        lead = await gw.ok("create-lead", {"name": f"d{i}", "email": f"d{i}@x.io",
                                           "tags": tags})
        ids.append(lead["_id"])
    assert await gw.ok("remove", {"lead": ids[3]}) == {"deleted": True}
    assert await gw.storage.records.get("lead", ids[3]) is None
    assert await gw.ok("remove-tagged", {"tag": "x"}) == {"deleted": 2}
    left = (await gw.storage.records.search("lead")).results
    assert [r["_id"] for r in left] == [ids[2]]
    assert await gw.ok("remove-tagged", {"tag": "nothing"}) == {"deleted": 0}


async def test_search_constraints_sort_limit_and_cursor(gw: Gateway) -> None:
    rows = [("alpha", "5"), ("alpine", "7"), ("alps", "7"), ("beta", "9"), ("alto", "1"),
            ("alder", "3"), ("algae", "4")]
    for name, score in rows:
        await gw.ok("create-scored", {"name": name, "score": score})
    (algae,) = (await gw.storage.records.search(
        "lead", [Constraint("name", "equals", "algae")])).results
    await gw.storage.records.update("lead", algae["_id"], {"active": False})
    seen: list[str] = []
    cursor = None
    pages = []
    while True:
        body: dict[str, Any] = {"min_score": 2, "part": "al", "excluded": ["alder"]}
        if cursor:
            body["cursor"] = cursor
        page = await gw.ok("find", body)
        pages.append(page)
        seen.extend(page["names"])
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == ["alpine", "alps", "alpha"]
    assert [p["names"] for p in pages] == [["alpine", "alps"], ["alpha"]]
    assert [p["count"] for p in pages] == [3, 3]
    assert [p["remaining"] for p in pages] == [1, 0]


async def test_search_that_comes_back_empty_is_in_the_run_log(gw: Gateway) -> None:
    response = await gw.post("find", {"min_score": 100, "part": "zz"})
    assert response.json()["response"] == {"names": [], "count": 0, "remaining": 0,
                                           "cursor": None}
    logged = await gw.run_log(response)
    search = logged["steps"][0]
    assert search["action"] == "search" and search["id"] == "found"
    assert search["reason"] == "the search came back empty"


async def test_unique_violation_from_a_parameter_is_409(gw: Gateway) -> None:
    await gw.ok("create-lead", {"name": "E", "email": "dup@example.com"})
    response = await gw.post("create-lead", {"name": "F", "email": "dup@example.com"})
    message = error_of(response, 409, "DUPLICATE")
    assert "email" in message
    logged = await gw.run_log(response)
    assert logged["status"] == "failed"
    assert logged["steps"][0]["status"] == "failed"
    found = await gw.storage.records.search("lead")
    assert [r["name"] for r in found.results] == ["E"]


async def test_on_error_continue_swallows_a_unique_violation(gw: Gateway) -> None:
    assert await gw.ok("tolerant-create", {"email": "t@example.com"}) == {"created": True}
    assert await gw.ok("tolerant-create", {"email": "t@example.com"}) == {"created": False}


async def test_field_value_of_the_wrong_type_is_400(gw: Gateway) -> None:
    response = await gw.post("create-scored", {"name": "G", "score": "lots"})
    message = error_of(response, 400, "INVALID_DATA")
    assert "score" in message and "number" in message
    assert (await gw.storage.records.search("lead")).count == 0


async def test_date_field_round_trip(gw: Gateway) -> None:
    lead = await gw.ok("create-scored", {"name": "H", "score": "1",
                                         "seen_at": "2024-05-01T14:00:00+02:00"})
    assert lead["seen_at"] == "2024-05-01T12:00:00.000000Z"
    found = await gw.ok("get-lead", {"id": lead["_id"]})
    assert found["found"]["seen_at"] == "2024-05-01T12:00:00.000000Z"


async def test_record_parameter_is_loaded_or_refused(gw: Gateway) -> None:
    missing = "1714557600000x123456789012345678"
    for name, body in [("rename", {"lead": missing, "name": "x"}), ("remove", {"lead": missing})]:
        message = error_of(await gw.post(name, body), 400, "INVALID_DATA")
        assert "lead" in message
    error_of(await gw.post("rename", {"lead": 42, "name": "x"}), 400, "INVALID_DATA")


async def test_make_changes_on_a_missing_id_is_a_clear_error(gw: Gateway) -> None:
    response = await gw.post("rename-by-id", {"id": "1714557600000x123456789012345678",
                                              "name": "x"})
    assert response.status_code in (400, 404), response.text
    assert response.json()["body"]["status"] in ("INVALID_DATA", "NOT_FOUND")
    assert "Traceback" not in response.text


SIGNUP = """
---
kind: api_workflow
name: signup
expose: true
auth: none
params: {email: {type: text}}
steps:
  - action: signup_user
    email: "{{ params.email }}"
    password: correct horse battery
"""


async def test_records_are_stamped_with_the_run_s_clock(serve: Serve, storage_url: str) -> None:
    """A record's Created Date and Modified Date are the time of the run's clock (the
    app's, injected here, years from the wall clock's), on both backends: by each record
    action, and by a sign-up."""
    now = [datetime(2031, 5, 4, 3, 2, 1, 123000, tzinfo=UTC)]
    async with serve(CONFIG + SIGNUP, storage_url, clock=lambda: now[0]) as served:
        gw = Gateway(served.client, served.storage)
        both = await gw.ok("create-then-change", {"name": "Di"})
        lead = await gw.ok("create-lead", {"name": "Ed", "email": "ed@x.io", "tags": ["t"]})
        created = now[0]
        for id in (both["created"]["_id"], lead["_id"]):
            stored = await gw.storage.records.get("lead", id)
            assert stored is not None
            assert (stored["created_at"], stored["modified_at"]) == (created, created)
        now[0] += timedelta(days=3)
        await gw.ok("rename-by-id", {"id": both["created"]["_id"], "name": "Dee"})
        await gw.ok("rescore-tagged", {"tag": "t", "score": 2})
        for id in (both["created"]["_id"], lead["_id"]):
            stored = await gw.storage.records.get("lead", id)
            assert stored is not None
            assert (stored["created_at"], stored["modified_at"]) == (created, now[0])
        await gw.ok("signup", {"email": "fay@x.io"})
        (user,) = (await gw.storage.records.search("user")).results
        assert (user["created_at"], user["modified_at"]) == (now[0], now[0])
