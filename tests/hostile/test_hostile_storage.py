"""What a caller can send at the records store: the same answer on SQLite and PostgreSQL,
either stored faithfully or a 400 `INVALID_DATA` that names the field (never the value),
never a 500; counters that do not lose updates; and SQL (and the caches keyed by it) that
does not grow with a list. A database that cannot serve: `test_hostile_storage_outage.py`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Serve

from gateway.core.errors import ValidationError
from gateway.storage import Constraint, FieldSpec, Storage, TypeSpec
from gateway.storage.common.limits import MAX_INDEXED_TEXT_BYTES
from gateway.storage.common.query import compile_where
from gateway.storage.postgresql.dialect import PostgresDialect
from gateway.storage.sqlite.dialect import SqliteDialect
from gateway.storage.sqlite.record_store import QUICK_PLANS, QUICK_ROWS
from gateway.storage.sqlite.storage import SqliteStorage

CONFIG = """
kind: settings
limits: {run_timeout: 5s}  # a bound on hostile queries, with room for a loaded test machine
---
kind: data_type
name: item
fields:
  name: {type: text, indexed: true}
  code: {type: text, unique: true}
  n: {type: integer}
  x: {type: number}
  meta: {type: object}
---
kind: api_workflow
name: add
expose: true
auth: none
params:
  name: {type: text, optional: true}
  code: {type: text, optional: true}
  n: {type: text, optional: true}
  meta: {type: object, optional: true}
steps:
  - id: item
    action: create_thing
    type: item
    fields: {name: "{{ params.name }}", code: "{{ params.code }}", n: "{{ params.n }}",
             meta: "{{ params.meta }}"}
  - action: return_data
    data: {id: "{{ steps.item._id }}"}
---
kind: api_workflow
name: add-nul
expose: true
auth: none
params:
  where: {type: text}
steps:
  - action: create_thing
    only_when: "{{ params.where == 'text' }}"
    type: item
    fields: {name: "{{ 'a\\u0000b' }}"}
  - action: create_thing
    only_when: "{{ params.where == 'key' }}"
    type: item
    fields: {meta: "{{ {'key\\u0000': 1} }}"}
  - action: create_thing
    only_when: "{{ params.where == 'deep' }}"
    type: item
    fields: {meta: "{{ {'list': ['ok', 'sneaky\\u0000']} }}"}
  - action: search
    only_when: "{{ params.where == 'search' }}"
    type: item
    constraints: [{key: name, constraint: equals, value: "{{ 'a\\u0000' }}"}]
  - action: search
    only_when: "{{ params.where == 'in' }}"
    type: item
    constraints: [{key: name, constraint: in, value: "{{ ['ok', 'a\\u0000'] }}"}]
  - id: found
    action: get_thing
    only_when: "{{ params.where == 'id' }}"
    type: item
    thing: "{{ '1x\\u0000' }}"
  - action: return_data
    data: {found: "{{ steps.found is not none }}"}
---
kind: api_workflow
name: find
expose: true
auth: none
params:
  name: {type: text, optional: true}
  n: {type: text, optional: true}
  names: {type: text, list: true, optional: true}
steps:
  - id: by_name
    action: search
    only_when: "{{ params.name is not none }}"
    type: item
    constraints: [{key: name, constraint: equals, value: "{{ params.name }}"}]
  - id: by_n
    action: search
    only_when: "{{ params.n is not none }}"
    type: item
    constraints: [{key: n, constraint: greater_than, value: "{{ params.n }}"}]
  - id: among
    action: search
    only_when: "{{ params.names }}"
    type: item
    constraints: [{key: name, constraint: in, value: "{{ params.names }}"}]
  - id: outside
    action: search
    only_when: "{{ params.names }}"
    type: item
    constraints: [{key: name, constraint: not_in, value: "{{ params.names }}"}]
  - action: return_data
    data:
      by_name: "{{ steps.by_name.count if steps.by_name else none }}"
      by_n: "{{ steps.by_n.count if steps.by_n else none }}"
      among: "{{ steps.among.count if steps.among else none }}"
      outside: "{{ steps.outside.count if steps.outside else none }}"
---
kind: api_workflow
name: bump
expose: true
auth: none
params:
  id: {type: text}
  by: {type: integer, optional: true, default: 1}
steps:
  - id: item
    action: make_changes
    thing: "{{ params.id }}"
    type: item
    increment: {n: "{{ params.by }}", x: 0.1}
  - action: return_data
    data: {n: "{{ steps.item.n }}", x: "{{ steps.item.x }}"}
"""


@pytest.fixture
def storage_types() -> list[TypeSpec]:
    return [TypeSpec("item", {
        "name": FieldSpec("name", "text", indexed=True),
        "code": FieldSpec("code", "text", unique=True),
        "n": FieldSpec("n", "integer"),
        "x": FieldSpec("x", "number"),
        "meta": FieldSpec("meta", "object"),
    })]


@pytest.fixture
async def gw(serve: Serve, storage_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    async with serve(CONFIG, storage_url) as gateway:
        yield gateway.client, gateway.storage


def refused(response: httpx.Response, field: str, value: str = "") -> None:
    """A 400 INVALID_DATA naming `field`, and not repeating `value`."""
    assert response.status_code == 400, response.text
    body = response.json()["body"]
    assert body["status"] == "INVALID_DATA" and field in body["message"], body
    assert not value or value not in response.text


async def count(storage: Any) -> int:
    return int((await storage.records.search("item")).count)


# --- values neither backend can hold faithfully: refused on both ------------------------


@pytest.mark.parametrize(("where", "field"), [
    ("text", "name"), ("key", "meta"), ("deep", "meta"), ("search", "name"), ("in", "name"),
])
async def test_nul_in_a_record_or_a_search_is_a_400_on_both_backends(
        gw: tuple[httpx.AsyncClient, Any], where: str, field: str) -> None:
    client, storage = gw
    refused(await client.post("/api/1.1/wf/add-nul", json={"where": where}), f"'{field}'",
            "sneaky")
    assert await count(storage) == 0


async def test_an_indexed_text_longer_than_a_btree_entry_is_a_400_on_both(
        gw: tuple[httpx.AsyncClient, Any]) -> None:
    client, storage = gw
    for field in ("name", "code"):
        # Text that does not compress: PostgreSQL cannot shrink it under its limit.
        long = "".join(chr(0x4E00 + (n * 7919) % 20000) for n in range(3000))
        refused(await client.post("/api/1.1/wf/add", json={field: long}), field, long[:50])
    fits = "é" * (MAX_INDEXED_TEXT_BYTES // 2)
    assert (await client.post("/api/1.1/wf/add", json={"code": fits})).status_code == 200
    found = await client.post("/api/1.1/wf/find", json={"name": "x"})
    assert found.status_code == 200 and await count(storage) == 1


async def test_an_integer_beyond_64_bits_is_a_400_whether_stored_or_searched(
        gw: tuple[httpx.AsyncClient, Any]) -> None:
    client, storage = gw
    huge = "123456789012345678901234567890"
    refused(await client.post("/api/1.1/wf/add", json={"n": huge}), "n", huge)
    refused(await client.post("/api/1.1/wf/find", json={"n": huge}), "n", huge)
    largest = str(2**63 - 1)
    assert (await client.post("/api/1.1/wf/add", json={"n": largest})).status_code == 200
    found = await client.post("/api/1.1/wf/find", json={"n": str(2**63 - 2)})
    assert found.json()["response"]["by_n"] == 1


async def test_an_object_nested_past_the_limit_is_a_400_on_both_backends(
        storage: Storage) -> None:
    deep: Any = 1
    for _ in range(1000):  # past what the JSON encoders and SQLite's json() go to
        deep = {"a": [deep]}
    with pytest.raises(ValidationError, match="'meta'"):
        await storage.records.create("item", {"meta": deep})
    with pytest.raises(ValidationError, match="'meta'"):
        await storage.records.search("item", [Constraint("meta", "equals", deep)])
    assert (await storage.records.search("item")).count == 0


async def test_an_id_no_record_can_have_is_not_found_on_both_backends(
        gw: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = gw
    response = await client.post("/api/1.1/wf/add-nul", json={"where": "id"})
    assert response.json() == {"status": "success", "response": {"found": False}}


async def test_invalid_unicode_is_refused_by_the_store_on_both_backends(storage: Storage) -> None:
    with pytest.raises(ValidationError, match="'name'"):
        await storage.records.create("item", {"name": "a\ud800"})
    with pytest.raises(ValidationError, match="'name'"):
        await storage.records.search("item", [Constraint("name", "equals", "\udfff")])
    assert await storage.records.get("item", "a\ud800") is None
    assert await storage.records.delete_many("item", ["a\ud800", "b\u0000"]) == []


async def test_an_in_list_longer_than_postgresql_takes_parameters_is_answered_on_both(
        gw: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = gw
    for name in ("x5", "other"):
        assert (await client.post("/api/1.1/wf/add", json={"name": name})).status_code == 200
    names = [f"x{n}" for n in range(70_000)]
    response = await client.post("/api/1.1/wf/find", json={"names": names})
    assert response.status_code == 200, response.text
    assert response.json()["response"] == {"by_name": None, "by_n": None, "among": 1,
                                           "outside": 1}


# --- counters: an atomic increment ------------------------------------------------------


async def test_fifty_parallel_increments_end_at_fifty_on_both_backends(
        gw: tuple[httpx.AsyncClient, Any]) -> None:
    client, storage = gw
    id = (await client.post("/api/1.1/wf/add", json={"n": "0"})).json()["response"]["id"]
    responses = await asyncio.gather(*(
        client.post("/api/1.1/wf/bump", json={"id": id}) for _ in range(50)))
    assert [r.status_code for r in responses] == [200] * 50
    assert sorted(r.json()["response"]["n"] for r in responses) == list(range(1, 51))
    record = await storage.records.get("item", id)
    assert record["n"] == 50 and record["x"] == pytest.approx(5.0)


async def test_an_increment_reports_the_states_it_went_from_and_to(storage: Storage) -> None:
    created = await storage.records.create("item", {"n": 7})
    change = await storage.records.update("item", created.id, {"name": "b"}, {"n": -2, "x": 0.1})
    assert change.before is not None and change.after is not None
    assert (change.before["n"], change.before.get("x")) == (7, None)
    assert (change.after["n"], change.after["x"], change.after["name"]) == (5, 0.1, "b")
    again = await storage.records.update("item", created.id, {}, {"x": 0.2})
    assert again.after is not None and again.after["x"] == 0.1 + 0.2  # doubles on both
    assert await storage.records.get("item", created.id) == again.after


async def test_an_increment_past_64_bits_or_of_a_non_number_is_a_400_on_both(
        storage: Storage) -> None:
    created = await storage.records.create("item", {"n": 2**63 - 1, "name": "t"})
    with pytest.raises(ValidationError, match="'n'"):
        await storage.records.update("item", created.id, {}, {"n": 1})
    with pytest.raises(ValidationError, match="'name'"):
        await storage.records.update("item", created.id, {}, {"name": 1})
    with pytest.raises(ValidationError, match="'n'"):
        await storage.records.update("item", created.id, {"n": 1}, {"n": 1})
    after = await storage.records.get("item", created.id)
    assert after is not None and after["n"] == 2**63 - 1


async def test_an_increment_through_the_api_is_refused_past_64_bits(
        gw: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = gw
    id = (await client.post("/api/1.1/wf/add", json={"n": str(2**63 - 1)})).json()[
        "response"]["id"]
    refused(await client.post("/api/1.1/wf/bump", json={"id": id}), "n")


# --- SQL that does not vary with a list, and caches keyed by SQL that stay bounded ------


@pytest.mark.parametrize("dialect", [SqliteDialect(), PostgresDialect()],
                         ids=["sqlite", "postgresql"])
def test_in_lists_of_5000_lengths_compile_to_one_sql_text(dialect: Any) -> None:
    spec = TypeSpec("item", {"n": FieldSpec("n", "integer"), "name": FieldSpec("name", "text")})
    numbers = list(range(5000))
    texts = {compile_where(dialect, spec, "item", [Constraint("n", "in", numbers[:length])]).sql
             for length in range(1, 5001)}
    names = [str(n) for n in range(5000)]
    texts |= {compile_where(dialect, spec, "item", [Constraint("n", "in", numbers[:1]),
                                                     Constraint("name", "not_in", names[:length])])
              .sql for length in range(1, 5001, 37)}
    assert len(texts) == 2


async def test_in_lists_of_every_length_leave_the_plan_cache_bounded(tmp_path: Path) -> None:
    store = SqliteStorage(f"sqlite:///{tmp_path / 'gateway.db'}")
    await store.open([TypeSpec("item", {"name": FieldSpec("name", "text", indexed=True)})])
    try:
        await store.records.create("item", {"name": "7"})
        names = [str(n) for n in range(5000)]
        # Every length the event loop's quick path (which caches plans) takes, and beyond.
        for length in [*range(1, QUICK_ROWS + 1), *range(QUICK_ROWS + 1, 5001, 50)]:
            page = await store.records.search(
                "item", [Constraint("name", "in", names[:length])], limit=10)
            assert page.count == (1 if length > 7 else 0)
        assert len(store.records._quick) <= 2  # one search, one count
        for n in range(QUICK_PLANS * 2):  # distinct SQL texts: undeclared keys
            await store.records.search("item", [Constraint(f"k{n}", "equals", 1)], limit=10)
        assert len(store.records._quick) <= QUICK_PLANS
    finally:
        await store.close()
