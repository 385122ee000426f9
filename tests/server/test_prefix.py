"""`server.prefix`: everything a caller calls is served under it (Bubble's `/version-test`);
health checks and metrics stay at the root, for load balancers and scrapers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from conftest import Serve

from gateway.cli import main

CONFIG = """\
kind: settings
server: {prefix: /version-test/}
openapi: {public: true}
metrics: {public: true}
---
kind: api_workflow
name: echo
expose: true
auth: none
params: {word: {type: text}}
steps:
  - action: return_data
    data: {word: "{{ params.word }}"}
---
kind: workflow_test
workflow: echo
cases:
  - name: answers under the prefix
    params: {word: hi}
    expect: {status: 200, response: {word: hi}}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "main.yaml").write_text(CONFIG)
    return folder


@pytest.fixture
async def client(serve: Serve, folder: Path, storage_url: str
                 ) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(folder, storage_url) as gateway:
        yield gateway.client


async def test_workflows_and_the_document_are_served_under_the_prefix(
        client: httpx.AsyncClient) -> None:
    answer = await client.post("/version-test/api/1.1/wf/echo", json={"word": "hi"})
    assert answer.status_code == 200 and answer.json()["response"] == {"word": "hi"}
    outside = await client.post("/api/1.1/wf/echo", json={"word": "hi"})
    assert outside.status_code == 404
    assert outside.json()["body"]["status"] == "NOT_FOUND"
    unknown = await client.post("/version-test/api/1.1/wf/nope", json={})
    assert unknown.status_code == 404 and unknown.json()["body"]["status"] == "NOT_FOUND"
    doc = (await client.get("/version-test/api/1.1/meta/openapi.json")).json()
    assert list(doc["paths"]) == ["/version-test/api/1.1/wf/echo"]
    bubbles = (await client.get("/version-test/api/1.1/meta/swagger.json")).json()
    assert bubbles["basePath"] == "/version-test/api/1.1" and list(bubbles["paths"]) == [
        "/wf/echo"]  # Swagger 2.0 paths are relative to the base path, as Bubble writes them
    alias = await client.post("/version-test/version-live/api/1.1/wf/echo", json={"word": "a"})
    assert alias.status_code == 200
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200
    assert (await client.get("/version-test/healthz")).status_code == 404


async def test_hostile_paths_under_the_prefix_are_clear_404s(client: httpx.AsyncClient) -> None:
    for path in ("/version-test", "/version-test/", "/version-test/../api/1.1/wf/echo",
                 "/version-test/api/1.1/wf/" + "a" * 10_000, "/version-testX/api/1.1/wf/echo",
                 "/version-test/api/1.1/wf/%00", "/version-test/api/1.1/meta/"):
        response = await client.post(path, json={"word": "hi"})
        assert response.status_code in (404, 405), (path, response.status_code)
        assert response.json()["body"]["status"] in ("NOT_FOUND", "METHOD_NOT_ALLOWED")
        assert len(response.content) < 500


def test_workflow_tests_call_under_the_prefix(folder: Path) -> None:
    result = CliRunner().invoke(main, ["test", str(folder)])
    assert result.exit_code == 0, result.output


def test_a_prefix_that_is_not_a_path_is_a_diagnostic(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("kind: settings\nserver: {prefix: version test}\n")
    result = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "error[schema.pattern]" in result.output
