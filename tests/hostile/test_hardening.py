"""What a hostile or careless caller (or config) cannot do: stall the server, pick an unbounded
search, leak a secret, crash a run past the run log, or have a read-only command change the
database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import served

from gateway.cli import main
from gateway.compiler.loader import load
from gateway.core.errors import DuplicateError
from gateway.runtime.coercion import compile_coercer
from gateway.runtime.param import Param
from gateway.server.app import storage_types as types_of
from gateway.storage import Constraint, FieldSpec, TypeSpec, open_storage

CONFIG = """
kind: settings
secrets: [API_KEY]
---
kind: data_type
name: item
fields:
  code: {type: text, unique: true}
  n: {type: integer}
  since: {type: date, default: "2024-01-01T00:00:00Z"}
---
kind: api_workflow
name: add
expose: true
auth: none
params:
  code: {type: text}
  n: {type: text, optional: true}
steps:
  - id: item
    action: create_thing
    type: item
    fields: {code: "{{ params.code }}", n: "{{ params.n ~ secrets.API_KEY if params.n else 1 }}"}
  - action: return_data
    data: {id: "{{ steps.item._id }}", since: "{{ steps.item.since }}"}
---
kind: api_workflow
name: find
expose: true
auth: none
method: GET
params:
  size: {type: integer, optional: true}
  cursor: {type: text, optional: true}
  since: {type: date, optional: true}
steps:
  - id: found
    action: search
    type: item
    constraints: [{key: since, constraint: equals, value: "{{ params.since }}"}]
    limit: "{{ params.size }}"
    cursor: "{{ params.cursor }}"
  - action: return_data
    data: {count: "{{ steps.found.count }}"}
---
kind: api_workflow
name: echo
expose: true
auth: none
params:
  tags: {type: text, list: true, optional: true}
  when: {type: date, optional: true}
steps:
  - action: return_data
    data: {tags: "{{ params.tags | length }}"}
---
kind: custom_event
name: inner
steps:
  - action: set
    values: {x: "{{ 1 // 0 }}"}
---
kind: api_workflow
name: outer
expose: true
auth: none
steps:
  - action: trigger_event
    event: inner
"""
SECRET = "sekrit-value-123"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    return path


@contextlib.asynccontextmanager
async def client_for(config: Path, url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    async with served(config, url, environment={"API_KEY": SECRET}) as gateway:
        yield gateway.client, gateway.storage


async def run_of(storage: Any, response: httpx.Response) -> dict[str, Any]:
    await storage.runs.flush_runs()
    found = await storage.runs.get_run(response.headers["x-run-id"])
    assert found is not None
    return dict(found)


async def test_a_form_with_many_repeats_of_one_key_is_handled_in_linear_time(
        config: Path, storage_url: str) -> None:
    body = "&".join(["tags=x"] * 140_000)  # about 1 MiB: quadratic gathering would take minutes
    async with client_for(config, storage_url) as (client, _):
        response = await client.post("/api/1.1/wf/echo", content=body, headers={
            "content-type": "application/x-www-form-urlencoded"})
    assert response.json() == {"status": "success", "response": {"tags": 140_000}}


@pytest.mark.parametrize("size", ["-1", "0", "10001", "many"])
async def test_a_search_limit_outside_1_to_10000_is_refused(
        config: Path, storage_url: str, size: str) -> None:
    async with client_for(config, storage_url) as (client, _):
        response = await client.get("/api/1.1/wf/find", params={"size": size})
    expected = "INVALID_DATA"
    assert (response.status_code, response.json()["body"]["status"]) == (400, expected)


async def test_a_cursor_no_store_gave_is_a_400(config: Path, storage_url: str) -> None:
    async with client_for(config, storage_url) as (client, _):
        response = await client.get("/api/1.1/wf/find", params={
            "cursor": "bzo5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk"})
    assert response.status_code == 400


async def test_nested_lists_deeper_than_the_parser_goes_are_a_400(
        config: Path, storage_url: str) -> None:
    async with client_for(config, storage_url) as (client, storage):
        deep = await client.post("/api/1.1/wf/echo", data={"tags": "[" * 50_000})
        far = await client.post("/api/1.1/wf/echo", json={"when": 1e20})
        assert (deep.status_code, far.status_code) == (400, 400)
        assert (await run_of(storage, deep))["status"] == "rejected"


async def test_a_rejected_call_logs_only_its_declared_parameters_cut_short(
        config: Path, storage_url: str) -> None:
    async with client_for(config, storage_url) as (client, storage):
        response = await client.post("/api/1.1/wf/echo", json={
            "when": "x" * 5000, "junk": "y" * 5000})
        assert response.status_code == 400
        logged = (await run_of(storage, response))["params"]
    assert list(logged) == ["when"] and len(logged["when"]) < 300


async def test_secrets_stay_out_of_responses_and_the_run_log(
        config: Path, storage_url: str) -> None:
    async with client_for(config, storage_url) as (client, storage):
        response = await client.post("/api/1.1/wf/add", json={"code": "a", "n": "7"})
        assert response.status_code == 400 and SECRET not in response.text
        assert SECRET not in json.dumps(await run_of(storage, response), default=str)


async def test_a_date_default_is_stored_as_a_date(config: Path, storage_url: str) -> None:
    async with client_for(config, storage_url) as (client, _):
        created = await client.post("/api/1.1/wf/add", json={"code": "b"})
        assert created.json()["response"]["since"] == "2024-01-01T00:00:00.000000Z"
        found = await client.get("/api/1.1/wf/find", params={"since": "2024-01-01T00:00:00Z"})
    assert found.json() == {"status": "success", "response": {"count": 1}}


async def test_a_failing_custom_event_keeps_its_steps_and_its_location(
        config: Path, storage_url: str) -> None:
    async with client_for(config, storage_url) as (client, storage):
        response = await client.post("/api/1.1/wf/outer")
        assert response.status_code == 500
        run = await run_of(storage, response)
    assert run["steps"][0]["steps"][0]["status"] == "failed"
    lines = textwrap.dedent(CONFIG).splitlines()
    event_step = lines.index("name: inner") + 3  # 1-based line of the event's `set` step
    assert run["error"]["location"] == f"{config}:{event_step}"  # not the calling step


async def test_head_is_answered_on_a_get_workflow(config: Path, storage_url: str) -> None:
    async with client_for(config, storage_url) as (client, _):
        response = await client.head("/api/1.1/wf/find")
    assert response.status_code == 200


def test_reading_the_run_log_leaves_the_indexes_of_another_config_alone(
        config: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    types = types_of(load([config]))

    async def open_and(work: Any) -> None:
        storage = open_storage(url)
        await storage.open(types, sync_indexes=False)
        try:
            await work(storage)
        finally:
            await storage.close()

    async def nothing(storage: Any) -> None:
        return None

    async def duplicate(storage: Any) -> None:
        await storage.records.create("item", {"code": "same"})
        with pytest.raises(DuplicateError):
            await storage.records.create("item", {"code": "same"})

    storage = open_storage(url)
    asyncio.run(storage.open(types))  # creates the unique index on item.code
    asyncio.run(storage.close())
    other = tmp_path / "other.yaml"
    other.write_text("kind: api_workflow\nname: x\nauth: none\nsteps:\n  - action: terminate\n")
    for args in (["runs", "list"], ["runs", "show", "nope"]):
        CliRunner().invoke(main, [*args, "--config", str(other), "--database", url])
    asyncio.run(open_and(nothing))
    asyncio.run(open_and(duplicate))


async def test_purging_old_runs_goes_past_one_chunk(storage: Any) -> None:
    old = datetime(2020, 1, 1, tzinfo=timezone.utc)
    for n in range(2500):
        storage.runs.record_run({"id": f"run-{n:05d}", "workflow": "w", "status": "success",
                            "started_at": old, "steps": []})
    await storage.runs.flush_runs()
    deleted = await storage.runs.purge_runs(old + timedelta(days=30), timedelta(days=14),
                                       timedelta(days=30))
    assert deleted == 2500
    assert await storage.runs.list_runs() == []


def test_epoch_milliseconds_arrive_as_text_too() -> None:
    coerce = compile_coercer("w", [Param("when", "date")])
    assert coerce({"when": "1700000000000"}) == coerce({"when": 1700000000000}) == {
        "when": datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)}
    assert coerce({"when": "20240101"}) == {"when": datetime(2024, 1, 1, tzinfo=timezone.utc)}


@pytest.fixture
def storage_types() -> list[TypeSpec]:
    return [TypeSpec("tag", {"label": FieldSpec("label", "text", indexed=True)})]


async def test_a_search_counts_exactly_past_what_is_read_on_the_event_loop(
        storage: Any) -> None:
    await asyncio.gather(*(storage.records.create("tag", {"label": "same"}) for _ in range(1100)))
    await storage.records.create("tag", {"label": "other"})
    page = await storage.records.search("tag", [Constraint("label", "equals", "same")], limit=10)
    assert (len(page.results), page.count, page.remaining) == (10, 1100, 1090)
    small = await storage.records.search("tag", [Constraint("label", "equals", "other")], limit=10)
    assert (len(small.results), small.count, small.remaining) == (1, 1, 0)
