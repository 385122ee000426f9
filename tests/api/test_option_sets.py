"""Option sets through a real server, on SQLite and PostgreSQL: a workflow parameter, a
data type's field and list of them, the Data API (options by their display) with its
constraints, a renamed display, and hostile input that is refused and stores nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from conftest import Serve

from gateway.api.auth import key_hash, new_key
from gateway.storage import Storage

STATUS = """
kind: option_set
name: status
attributes: {color: text, rank: integer}
options:
  - {value: open, display: Open, attributes: {color: green, rank: 1}}
  - {value: waiting, display: "Waiting, on {{ them }}", attributes: {color: orange, rank: 2}}
  - {value: closed, display: Closed, attributes: {color: grey, rank: 3}}
"""
CONFIG = """
kind: data_type
name: ticket
api: {expose: true}
fields:
  title: {type: text}
  status: {type: status}
  history: {type: status, list: true}
---
kind: api_workflow
name: open-ticket
expose: true
auth: none
params:
  title: {type: text}
  status: {type: status}
  history: {type: status, list: true, optional: true}
steps:
  - id: ticket
    action: create_thing
    type: ticket
    fields:
      title: "{{ params.title }}"
      status: "{{ params.status }}"
      history: "{{ params.history }}"
  - id: found
    action: search
    type: ticket
    constraints: [{key: status, constraint: equals, value: "{{ params.status }}"}]
  - action: return_data
    data:
      id: "{{ steps.ticket._id }}"
      status: "{{ params.status }}"
      shown: "{{ params.status.display }} ({{ params.status.color }}, {{ params.status.rank }})"
      is_open: "{{ params.status == 'open' }}"
      stored: "{{ steps.ticket.status.display }}"
      history: "{{ params.history | map(attribute='display') | list }}"
      same_status: "{{ steps.found.count }}"
      choices: "{{ option_sets.status | map(attribute='value') | list }}"
"""


def _config(display: str = "Open") -> str:
    return STATUS.replace("display: Open,", f"display: {display},") + "---\n" + CONFIG


@dataclass
class Api:
    client: httpx.AsyncClient
    storage: Storage
    admin: dict[str, str]


@pytest.fixture
async def api(serve: Serve, storage_url: str) -> AsyncIterator[Api]:
    async with serve(_config(), storage_url) as gateway:
        assert gateway.storage is not None
        key = new_key()
        await gateway.storage.keys.create_key("admin", key_hash(key), datetime.now(UTC))
        yield Api(gateway.client, gateway.storage, {"Authorization": f"Bearer {key}"})


async def _count(api: Api) -> int:
    page = await api.storage.records.search("ticket")
    return page.count


async def _search(api: Api, constraints: list[dict[str, Any]]) -> httpx.Response:
    return await api.client.get("/api/1.1/obj/ticket", headers=api.admin,
                                params={"constraints": json.dumps(constraints)})


async def test_a_workflow_takes_an_option_by_value_or_display(api: Api) -> None:
    answer = await api.client.post("/api/1.1/wf/open-ticket", json={
        "title": "Printer", "status": "Open", "history": ["closed", "Waiting, on {{ them }}"]})
    assert answer.status_code == 200, answer.text
    response = answer.json()["response"]
    assert response["status"] == "open"  # an option is written out as its value
    assert response["shown"] == "Open (green, 1)"
    assert response["is_open"] is True and response["stored"] == "Open"
    assert response["history"] == ["Closed", "Waiting, on {{ them }}"]
    assert response["same_status"] == 1
    assert response["choices"] == ["open", "waiting", "closed"]
    record = await api.storage.records.get("ticket", response["id"])
    assert record is not None
    assert (str(record["status"]), [str(s) for s in record["history"]]) == (
        "open", ["closed", "waiting"])  # the values are stored, not the displays


async def test_the_data_api_speaks_displays_and_constrains_on_options(api: Api) -> None:
    made = []
    for title, status, history in (("a", "Open", []), ("b", "Closed", ["Open"]),
                                   ("c", "Waiting, on {{ them }}", ["Open", "Closed"])):
        answer = await api.client.post("/api/1.1/obj/ticket", headers=api.admin, json={
            "title": title, "status": status, "history": history})
        assert answer.status_code == 201, answer.text
        made.append(answer.json()["id"])
    got = await api.client.get(f"/api/1.1/obj/ticket/{made[2]}", headers=api.admin)
    assert got.json()["response"]["status"] == "Waiting, on {{ them }}"
    assert got.json()["response"]["history"] == ["Open", "Closed"]

    async def titles(*constraints: dict[str, Any]) -> list[str]:
        answer = await _search(api, list(constraints))
        assert answer.status_code == 200, answer.text
        return sorted(r["title"] for r in answer.json()["response"]["results"])

    assert await titles({"key": "status", "constraint_type": "equals", "value": "Open"}) == ["a"]
    assert await titles({"key": "status", "constraint_type": "not equal",
                         "value": "Open"}) == ["b", "c"]
    assert await titles({"key": "status", "constraint_type": "in",
                         "value": ["Closed", "Waiting, on {{ them }}"]}) == ["b", "c"]
    assert await titles({"key": "status", "constraint_type": "not in",
                         "value": ["Closed"]}) == ["a", "c"]
    assert await titles({"key": "history", "constraint_type": "contains",
                         "value": "Open"}) == ["b", "c"]
    assert await titles({"key": "history", "constraint_type": "not contains",
                         "value": "Closed"}) == ["a", "b"]
    assert await titles({"key": "history", "constraint_type": "is_empty"}) == ["a"]
    wrong = await _search(api, [{"key": "status", "constraint_type": "equals",
                                 "value": "Shut"}])
    assert wrong.status_code == 400 and "option set status" in wrong.json()["body"]["message"]


@pytest.mark.parametrize("body", [
    {"title": "x", "status": "Shut"},  # no such option
    {"title": "x", "status": 3},  # not text
    {"title": "x", "status": {"value": "open"}},
    {"title": "x", "status": "Open", "history": 7},  # not a list
    {"title": "x", "status": "Open", "history": ["Open", "Open"]},  # twice
    {"title": "x", "status": "Open", "history": ["Open"] * 100_000},  # huge
])
async def test_hostile_values_are_refused_and_store_nothing(api: Api,
                                                            body: dict[str, Any]) -> None:
    by_api = await api.client.post("/api/1.1/obj/ticket", headers=api.admin, json=body)
    assert by_api.status_code == 400, by_api.text
    assert by_api.json()["body"]["status"] == "INVALID_DATA"
    assert "option set status" in by_api.json()["body"]["message"]
    by_workflow = await api.client.post("/api/1.1/wf/open-ticket", json=body)
    assert by_workflow.status_code == 400, by_workflow.text
    assert by_workflow.json()["body"]["status"] == "INVALID_DATA"
    assert "option set status" in by_workflow.json()["body"]["message"]
    assert await _count(api) == 0


async def test_a_renamed_display_keeps_the_stored_records(serve: Serve,
                                                          storage_url: str) -> None:
    async with serve(_config(), storage_url) as before:
        answer = await before.client.post("/api/1.1/wf/open-ticket",
                                          json={"title": "t", "status": "Open"})
        id = answer.json()["response"]["id"]
    async with serve(_config("Opened"), storage_url) as after:
        assert after.storage is not None
        record = await after.storage.records.get("ticket", id)
        assert record is not None and record["status"].display == "Opened"
        old = await after.client.post("/api/1.1/wf/open-ticket",
                                      json={"title": "u", "status": "Open"})
        assert old.status_code == 400  # the old display names no option any more
        again = await after.client.post("/api/1.1/wf/open-ticket",
                                        json={"title": "u", "status": "Opened"})
        assert again.json()["response"]["same_status"] == 2


async def test_the_openapi_document_lists_the_options(api: Api) -> None:
    answer = await api.client.get("/api/1.1/meta/openapi.json", headers=api.admin)
    assert answer.status_code == 200, answer.text
    paths = answer.json()["paths"]
    body = paths["/api/1.1/wf/open-ticket"]["post"]["requestBody"]["content"]
    params = body["application/json"]["schema"]["properties"]
    assert params["status"]["enum"] == ["open", "waiting", "closed", "Open",
                                        "Waiting, on {{ them }}", "Closed"]
    assert params["history"]["uniqueItems"] is True
    created = paths["/api/1.1/obj/ticket"]["post"]["requestBody"]["content"]
    fields = created["application/json"]["schema"]["properties"]
    assert fields["status"]["enum"] == ["Open", "Waiting, on {{ them }}", "Closed"]
