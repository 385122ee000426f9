"""The `bubble-api` client (from PyPI), unchanged, against a real server on loopback, on
SQLite and PostgreSQL: create, get, search with every constraint type, paging, update,
replace, delete and bulk creation; and what its writes hand to database triggers."""

from __future__ import annotations

import asyncio
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import requests
import uvicorn
from bubble_api import BubbleClient, Field  # type: ignore[import-untyped]
from conftest import Serve
from starlette.applications import Starlette

from gateway.api.auth import Authenticator, key_hash, new_key
from gateway.api.data_api import DataApi
from gateway.api.data_openapi import data_paths
from gateway.compiler.loader import load
from gateway.runtime.context import RunContext
from gateway.runtime.interpreter import Interpreter
from gateway.server.app import create_app
from gateway.storage import open_storage

CONFIG = """
kind: data_type
name: lead_source
api: {expose: true}
fields:
  name: {type: text}
  score: {type: number, indexed: true}
  tags: {type: text, list: true}
  seen: {type: date}
"""


async def _admin_key(url: str) -> str:
    storage = open_storage(url)
    await storage.open()
    try:
        key = new_key()
        await storage.keys.create_key("tests", key_hash(key), datetime.now(UTC))
        return key
    finally:
        await storage.close()


@pytest.fixture
def client(tmp_path: Path, storage_url: str) -> Iterator[BubbleClient]:
    (tmp_path / "types.yaml").write_text(textwrap.dedent(CONFIG).strip())
    key = asyncio.run(_admin_key(storage_url))
    app = create_app(load([tmp_path]), open_storage(storage_url))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield BubbleClient(f"http://127.0.0.1:{port}", api_token=key, bubble_version="live")
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_the_client_unchanged(client: BubbleClient) -> None:
    # The client folds "Lead Source" to `leadsource`, as Bubble's URLs have it.
    id = client.create("Lead Source", {"name": "Ada", "score": 3, "tags": ["vip"],
                                       "seen": "2026-01-02T00:00:00Z"})
    assert client.get("Lead Source", id)["name"] == "Ada"
    client.update_object("leadsource", id, {"score": 4})
    assert client.get("leadsource", id)["score"] == 4
    client.replace_object("leadsource", id, {"name": "Bea", "score": 5})
    replaced = client.get("leadsource", id)
    assert replaced["name"] == "Bea" and "tags" not in replaced
    results = client.create("leadsource", [{"name": f"n{i}", "score": i + 10,
                                            "tags": ["bulk"] if i % 2 else []}
                                           for i in range(230)])
    assert len(results) == 230 and {r["status"] for r in results} == {"success"}
    assert client.count_objects("leadsource") == 231
    everything = client.get_objects("leadsource")  # pages of 100 with the numeric cursor
    assert len(everything) == 231 and len({r["_id"] for r in everything}) == 231
    ordered = client.get_objects("leadsource", sort_field="score", descending=True, limit=40)
    assert [r["score"] for r in ordered][:3] == [239, 238, 237]
    checks = [
        (Field("name") == "Bea", 1), (Field("name") != "Bea", 230),
        (Field("seen").is_empty(), 231), (Field("name").is_not_empty(), 231),
        (Field("tags").is_empty_list(), 116), (Field("tags").is_not_empty_list(), 115),
        (Field("name").text_contains("N1"), 111), (Field("name").not_text_contains("n1"), 120),
        (Field("score") > 238, 1), (Field("score") < 11, 2),
        (Field("score").is_in([5, 10, 11]), 3), (Field("score").is_not_in([5, 10]), 229),
        (Field("tags").contains("bulk"), 115), (Field("tags").not_contains("bulk"), 116),
        (Field("Created Date") > datetime(2000, 1, 1), 231),
    ]
    for constraint, expected in checks:
        assert client.count_objects("leadsource", constraint) == expected, constraint.to_dict()
    client.delete_by_id("leadsource", id)
    with pytest.raises(requests.HTTPError) as missing:
        client.get("leadsource", id)
    assert missing.value.response.status_code == 404
    assert missing.value.response.json()["body"]["status"] == "MISSING_DATA"


async def test_writes_reach_the_commit_hooks_and_the_run_log(tmp_path: Path,
                                                             storage_url: str) -> None:
    """Where database triggers are enqueued: a Data API write is a run's commit like any
    other (one per request; a bulk creation is one run with every record it made)."""
    (tmp_path / "types.yaml").write_text(textwrap.dedent(CONFIG).strip())
    registry = load([tmp_path])
    storage = open_storage(storage_url)
    committed: list[list[tuple[str, bool, bool]]] = []

    async def hook(ctx: RunContext) -> None:
        committed.append([(c.type, c.before is None, c.after is None) for c in ctx.changes])

    interpreter = Interpreter(registry, storage, on_commit=[hook])
    auth = Authenticator(storage.keys, accounts=interpreter.accounts, records=storage.records)
    app = Starlette(routes=DataApi(interpreter, auth).routes())
    await storage.open(list(registry.data_types.values()))
    try:
        key = new_key()
        await storage.keys.create_key("tests", key_hash(key), datetime.now(UTC))
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://gw", headers=headers) as http:
            id = (await http.post("/api/1.1/obj/leadsource", json={"score": 1})).json()["id"]
            await http.patch(f"/api/1.1/obj/leadsource/{id}", json={"score": 2})
            refused = await http.patch(f"/api/1.1/obj/leadsource/{id}", json={"nope": 2})
            await http.post("/api/1.1/obj/leadsource/bulk", content='{"score": 3}\n{}',
                            headers={"Content-Type": "text/plain"})
            await http.delete(f"/api/1.1/obj/leadsource/{id}")
        await storage.runs.flush_runs()
        runs = await storage.runs.list_runs(workflow="obj/lead_source", limit=10)
    finally:
        await storage.close()
    assert refused.status_code == 400
    created, changed, deleted = ("lead_source", True, False), ("lead_source", False, False), \
        ("lead_source", False, True)
    assert committed == [[created], [changed], [created, created], [deleted]]
    assert sorted(r["status"] for r in runs) == ["rejected"] + ["success"] * 4
    assert all(r["identity"]["kind"] == "admin" for r in runs)


async def test_the_openapi_paths_answer_as_documented(serve: Serve, tmp_path: Path,
                                                      storage_url: str) -> None:
    """Every documented path and method of an exposed type answers one of its documented
    statuses; unexposed types are not documented."""
    (tmp_path / "types.yaml").write_text(textwrap.dedent(CONFIG).strip() + "\n---\n"
                                         "kind: data_type\nname: hidden\nfields: {}\n")
    registry = load([tmp_path])
    paths = data_paths(registry)
    assert set(paths) == {"/api/1.1/obj/leadsource", "/api/1.1/obj/leadsource/bulk",
                          "/api/1.1/obj/leadsource/{id}"}
    async with serve(registry, storage_url) as gateway:
        key = new_key()
        await gateway.storage.keys.create_key("tests", key_hash(key), datetime.now(UTC))
        http = gateway.client
        http.headers.update({"Authorization": f"Bearer {key}"})
        id = (await http.post("/api/1.1/obj/leadsource", json={})).json()["id"]
        for path, item in paths.items():
            for method, operation in item.items():
                assert operation["tags"] == ["Data"]
                body = {"content": "{}", "headers": {"Content-Type": "text/plain"}} \
                    if path.endswith("/bulk") else {"json": {"score": 1}} \
                    if method in ("post", "patch", "put") else {}
                answer = await http.request(method.upper(), path.replace("{id}", id), **body)
                assert str(answer.status_code) in operation["responses"], (path, method)
