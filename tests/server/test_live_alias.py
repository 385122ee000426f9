"""Bubble's other URLs of the live API: `/version-live/api/1.1/...` answers as `/api/1.1/...`
(workflows, the Data API, the documents), `wf/<name>/` reaches the workflow, and paths that
play tricks with either get a clear 404 (sent raw: an HTTP client would resolve `..`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from conftest import Serve, Served

from gateway.api.auth import key_hash, new_key

CONFIG = """\
kind: data_type
name: lead
api: {expose: true}
fields: {name: {type: text}}
---
kind: api_workflow
name: echo
expose: true
auth: none
params: {word: {type: text}}
steps:
  - action: return_data
    data: {word: "{{ params.word }}"}
"""


@pytest.fixture
async def gateway(serve: Serve, storage_url: str) -> AsyncIterator[tuple[Served, dict[str, str]]]:
    async with serve(CONFIG, storage_url) as served:
        key = new_key()
        await served.storage.keys.create_key("alias", key_hash(key), datetime.now(UTC))
        yield served, {"Authorization": f"Bearer {key}"}


async def test_version_live_is_the_live_api(gateway: tuple[Served, dict[str, str]]) -> None:
    served, admin = gateway
    client = served.client
    answer = await client.post("/version-live/api/1.1/wf/echo", json={"word": "hi"})
    assert answer.status_code == 200 and answer.json()["response"] == {"word": "hi"}
    created = await client.post("/version-live/api/1.1/obj/lead", json={"name": "Ada"},
                                headers=admin)
    assert created.status_code == 201
    id = created.json()["id"]
    got = await client.get(f"/api/1.1/obj/lead/{id}", headers=admin)  # the same records
    assert got.json()["response"]["name"] == "Ada"
    again = await client.get(f"/version-live/api/1.1/obj/lead/{id}", headers=admin)
    assert again.json() == got.json()
    doc = await client.get("/version-live/api/1.1/meta/swagger.json", headers=admin)
    assert doc.status_code == 200 and doc.json()["swagger"] == "2.0"
    assert (await client.get("/version-live/api/1.1/meta/swagger.json")).status_code == 401
    unknown = await client.post("/version-live/api/1.1/wf/nope", json={})
    assert unknown.status_code == 404 and unknown.json()["body"]["status"] == "NOT_FOUND"


async def test_a_trailing_slash_reaches_the_workflow(
        gateway: tuple[Served, dict[str, str]]) -> None:
    client = gateway[0].client
    for path in ("/api/1.1/wf/echo/", "/version-live/api/1.1/wf/echo/"):
        answer = await client.post(path, json={"word": "slash"})
        assert answer.status_code == 200, path
        assert answer.json()["response"] == {"word": "slash"}
        wrong = await client.get(path)
        assert wrong.status_code == 405  # the workflow's own answer to a wrong method
    for odd in ("/api/1.1/wf/echo//", "/api/1.1/wf//echo", "/api/1.1/wf/echo/%2F",
                "/api/1.1/wf/echo/./", "/api/1.1/wf/nope/"):
        answer = await _raw(gateway[0], "POST", odd)
        assert answer[0] == 404, odd
        assert answer[1]["body"]["status"] == "NOT_FOUND"


@pytest.mark.parametrize("path", [
    "/version-live/../api/1.1/wf/echo", "/version-live/..", "/version-live", "/version-live/",
    "/version-live//api/1.1/wf/echo", "/version-live/version-live/api/1.1/wf/echo",
    "/version-livex/api/1.1/wf/echo", "/version-live/api/1.1/../1.1/wf/echo",
    "/version-live/healthz", "/version-live/metrics", "/version-live/api/1.1/meta/",
    "/version-live/api/1.1/wf/echo/../echo", "/version-live/%00/api/1.1/wf/echo",
    "/version-live/" + "a" * 10_000,
])
async def test_tricks_on_the_alias_are_clear_404s(
        gateway: tuple[Served, dict[str, str]], path: str) -> None:
    status, body, size = await _raw(gateway[0], "POST", path)
    assert status in (404, 405), (path, status)
    assert body["body"]["status"] in ("NOT_FOUND", "METHOD_NOT_ALLOWED")
    assert size < 500


async def _raw(served: Served, method: str, path: str) -> tuple[int, Any, int]:
    """A request for `path` exactly as given (no client resolves its dots or slashes): the
    status, the JSON body and its size."""
    body = orjson.dumps({"word": "hi"})
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
             "server": ("gateway", 80), "headers": [
                 (b"host", b"gateway"), (b"content-type", b"application/json"),
                 (b"content-length", str(len(body)).encode())]}
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await served.app(scope, receive, send)
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], orjson.loads(content), len(content)


async def test_a_real_client_sees_the_same(gateway: tuple[Served, dict[str, str]]) -> None:
    """Through httpx (which resolves `..` itself): the resolved path is what is served."""
    client: httpx.AsyncClient = gateway[0].client
    answer = await client.post("/version-live/api/1.1/wf/../wf/echo", json={"word": "x"})
    assert answer.status_code == 200
