"""Searches on the system fields (`_id`, the created and modified dates, the creator) with
values that do not fit them: a 400 `INVALID_DATA` that names the field, on SQLite and on
PostgreSQL, through the Data API and through a workflow's `search`; and every form of a
value that does fit still finds what it should."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from conftest import Serve

from gateway.api.auth import key_hash, new_key
from gateway.storage import Storage

SYSTEM_KEYS = ("_id", "created_at", "modified_at", "created_by")
VALUED = ("equals", "not_equal", "text_contains", "not_text_contains", "greater_than",
          "less_than", "in", "not_in", "contains", "not_contains")
DATES = ("created_at", "modified_at")
TYPES = """
kind: data_type
name: item
api: {expose: true}
fields: {name: {type: text}}
"""


def _searchable() -> list[tuple[str, str]]:
    """The system keys and the constraints a workflow may apply to them (a date holds no
    text to search in: validate refuses that, see configs/invalid/constraint-system-field)."""
    return [(key, kind) for key in SYSTEM_KEYS for kind in VALUED
            if not (key in DATES and "contains" in kind)]


def _workflow() -> str:
    """A public workflow with one search step per system key and constraint, chosen by the
    parameters `key` and `kind`, the value being `params.q.v` (any JSON value)."""
    steps, ids = [], []
    for key, kind in _searchable():
        id = f"s{len(ids)}"
        ids.append(id)
        steps.append({
            "id": id, "action": "search", "type": "item",
            "only_when": f"{{{{ params.key == '{key}' and params.kind == '{kind}' }}}}",
            "constraints": [{"key": key, "constraint": kind, "value": "{{ params.q.v }}"}]})
    found = " or ".join(f"steps.{id}" for id in ids)
    steps.append({"action": "return_data", "data": {
        "ids": f"{{{{ ({found}).results | map(attribute='_id') | list }}}}"}})
    return json.dumps({"kind": "api_workflow", "name": "find", "expose": True, "auth": "none",
                       "params": {"key": {"type": "text"}, "kind": {"type": "text"},
                                  "q": {"type": "object"}},
                       "steps": steps})


@dataclass
class Gateway:
    client: httpx.AsyncClient
    storage: Storage
    admin: dict[str, str]
    first: dict[str, Any]
    second: dict[str, Any]

    async def api(self, key: str, kind: str, value: Any) -> httpx.Response:
        constraints = json.dumps([{"key": key, "constraint_type": kind, "value": value}])
        return await self.client.get("/api/1.1/obj/item", params={"constraints": constraints},
                                     headers=self.admin)

    async def workflow(self, key: str, kind: str, value: Any) -> httpx.Response:
        return await self.client.post("/api/1.1/wf/find", json={
            "key": key, "kind": kind, "q": {"v": value}})


@pytest.fixture
async def gw(serve: Serve, storage_url: str) -> AsyncIterator[Gateway]:
    config = textwrap.dedent(TYPES).strip() + "\n---\n" + _workflow()
    async with serve(config, storage_url) as served:
        storage = served.storage
        key = new_key()
        await storage.keys.create_key("admin", key_hash(key), datetime.now(UTC))
        first = (await storage.records.create("item", {"name": "a"}, created_by="u1")).record
        second = (await storage.records.create("item", {"name": "b"}, created_by="u2")).record
        yield Gateway(served.client, storage, {"Authorization": f"Bearer {key}"}, first, second)


def _refused(response: httpx.Response, name: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()["body"]
    assert body["status"] == "INVALID_DATA" and name in body["message"], body
    assert "Traceback" not in response.text


# Values no date is: text that is no date, numbers past any date, objects, lists, booleans.
NOT_DATES: tuple[Any, ...] = ("garbage", "", 1e30, -1e30, {"x": 1}, [[1]], True, "2024-13-45")
NOT_IDS: tuple[Any, ...] = ({"x": 1}, 1, 2.5, True, [1, 2.5, None, True], [[{"x": 1}]], "")
NOT_TEXT: tuple[Any, ...] = ({"x": 1}, True, [1], None)


def _hostile() -> list[tuple[str, str, Any]]:
    """(key, constraint, value) for every system key and constraint that takes a value."""
    cases: list[tuple[str, str, Any]] = []
    for key in SYSTEM_KEYS:
        for kind in VALUED:
            if "contains" in kind:  # dates hold no text to search in
                bad = ("2024",) if key in DATES else NOT_TEXT
            else:
                bad = NOT_DATES if key in DATES else NOT_IDS
            cases += [(key, kind, value) for value in bad]
    return cases


BUBBLE = {"_id": "_id", "created_at": "Created Date", "modified_at": "Modified Date",
          "created_by": "Created By"}
FOLDED = {"Created Date": "createddate", "Modified Date": "modifieddate",
          "Created By": "createdby"}
API_KINDS = {"not_equal": "not equal", "text_contains": "text contains",
             "not_text_contains": "not text contains", "greater_than": "greater than",
             "less_than": "less than", "not_in": "not in", "not_contains": "not contains"}


async def test_the_data_api_refuses_a_value_that_does_not_fit_a_system_field(
        gw: Gateway) -> None:
    for key, kind, value in _hostile():
        name = BUBBLE[key]
        for shown in {name, FOLDED.get(name, name)}:
            _refused(await gw.api(shown, API_KINDS.get(kind, kind), value), key)
    assert (await gw.storage.records.search("item")).count == 2


async def test_a_workflow_search_refuses_a_value_that_does_not_fit_a_system_field(
        gw: Gateway) -> None:
    searchable = _searchable()
    for key, kind, value in _hostile():
        if (key, kind) in searchable:
            _refused(await gw.workflow(key, kind, value), key)


def _forms(when: datetime) -> list[Any]:
    """One moment in every form a date is accepted in."""
    ms = int(when.timestamp() * 1000)
    return [when.isoformat(), when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            when.astimezone(timezone(timedelta(hours=2))).isoformat(), ms, str(ms), float(ms)]


async def test_system_fields_still_answer_values_that_fit(gw: Gateway) -> None:
    first, second = gw.first["_id"], gw.second["_id"]
    later = gw.second["created_at"] + timedelta(seconds=1)
    cases: list[tuple[str, str, Any, list[str]]] = [
        ("_id", "equals", first, [first]),
        ("_id", "not_equal", first, [second]),
        ("_id", "in", [first, second, None], [first, second]),
        ("_id", "not_in", [first], [second]),
        ("_id", "text_contains", first[-4:], [first]),
        ("created_by", "equals", "u2", [second]),
        ("created_by", "in", ["u1", "u3"], [first]),
        ("created_at", "equals", gw.first["created_at"].isoformat(), [first]),
        ("modified_at", "greater_than", "2000-01-01", [first, second]),
        ("created_at", "less_than", "2000-01-01", []),
    ]
    cases += [("created_at", "less_than", form, [first, second]) for form in _forms(later)]
    cases += [("modified_at", "in", [form], [first]) for form in
              _forms(gw.first["modified_at"])[:3]]
    for key, kind, value, expected in cases:
        answer = await gw.workflow(key, kind, value)
        assert answer.status_code == 200, (key, kind, value, answer.text)
        assert sorted(answer.json()["response"]["ids"]) == sorted(expected), (key, kind, value)
        answer = await gw.api(BUBBLE[key], API_KINDS.get(kind, kind), value)
        assert answer.status_code == 200, (key, kind, value, answer.text)
        found = [r["_id"] for r in answer.json()["response"]["results"]]
        assert sorted(found) == sorted(expected), (key, kind, value)
