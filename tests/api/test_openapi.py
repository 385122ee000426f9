"""The OpenAPI document: its shape, who may read it, that `gateway openapi` prints what the
server serves, and that it is true: schemathesis fuzzes a real server (`gateway serve` on
loopback) over the examples (workflows.d/ and every folder of examples/) and a typed
workflow, and every answer must be documented (no server error, no undocumented status,
content type, header or shape)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from click.testing import CliRunner
from conftest import Serve
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support import WORKFLOWS_D, example_folders, rates_api, smtp_server

from gateway.api.auth import key_hash, new_key
from gateway.api.openapi import PATH, document
from gateway.cli import main
from gateway.compiler.loader import load
from gateway.core.clock import utc_now

# The webhook senders' secrets the examples declare (the rates API is served on loopback),
# and the CRM's: a port nothing listens on (the syncs the fuzzing schedules fail there).
EXAMPLE_SECRETS = {"STRIPE_WEBHOOK_SECRET": "whsec_fuzzing", "GITHUB_WEBHOOK_SECRET": "fuzzing",
                   "CRM_API_URL": "http://127.0.0.1:9", "CRM_API_TOKEN": "fuzzing"}
MAX_EXAMPLES = 25  # per operation: keeps the fuzzing to seconds, in CI too
TYPED = """\
kind: data_type
name: item
fields:
  label: {type: text, unique: true}
  price: {type: number}
---
kind: api_workflow
name: typed
label: Every parameter type, in the body and the query
expose: true
auth: none
params:
  text: {type: text}
  number: {type: number, optional: true, default: 1.5}
  integer: {type: integer, optional: true}
  boolean: {type: boolean, optional: true, default: false}
  date: {type: date, optional: true}
  object: {type: object, optional: true}
  texts: {type: text, list: true, optional: true}
  numbers: {type: number, list: true, optional: true}
  item: {type: item, optional: true}
  source: {type: text, in: query, optional: true}
steps:
  - action: fail
    only_when: "{{ params.text == 'teapot' }}"
    status: 418
    code: TEAPOT
    message: short and stout
  - action: return_data
    status: 201
    only_when: "{{ params.integer is not none and params.integer > 100 }}"
    data: {big: true}
  - action: return_data
    data:
      text: "{{ params.text }}"
      number: "{{ params.number }}"
      texts: "{{ params.texts }}"
      source: "{{ params.source }}"
---
kind: api_workflow
name: typed-get
expose: true
auth: admin
method: GET
params:
  q: {type: text}
  n: {type: integer, optional: true, default: 10}
  flags: {type: boolean, list: true, optional: true}
steps:
  - action: return_data
    data: {q: "{{ params.q }}", n: "{{ params.n }}"}
---
kind: api_workflow
name: add-item
expose: true
auth: user
params:
  label: {type: text}
  price: {type: number}
steps:
  - id: item
    action: create_thing
    type: item
    fields: {label: "{{ params.label }}", price: "{{ params.price }}"}
  - action: return_data
    data: {id: "{{ steps.item._id }}"}
"""


def config_folder(root: Path) -> Path:
    """workflows.d, the workflows and tests of every folder of examples/, and the typed
    workflows, in one folder with one settings document: every example's settings in it."""
    folder = root / "config"
    shutil.copytree(WORKFLOWS_D, folder)
    merged = _settings_of(WORKFLOWS_D)
    for example in example_folders():
        shutil.copytree(example, folder / "examples" / example.name,
                        ignore=shutil.ignore_patterns("settings.yaml", "*.md"))
        for key, value in _settings_of(example).items():
            if key == "secrets":
                merged["secrets"] = [*merged.get("secrets", []), *value]
            elif key != "kind":
                assert key not in merged, f"two examples set {key}: merge them here"
                merged[key] = value
    write_settings(folder, merged)
    (folder / "typed.yaml").write_text(TYPED)
    return folder


def _settings_of(folder: Path) -> dict[str, Any]:
    settings: dict[str, Any] = yaml.safe_load((folder / "settings.yaml").read_text())
    return settings


def write_settings(folder: Path, settings: dict[str, Any]) -> None:
    (folder / "settings.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))


def test_the_document_describes_parameters_bodies_and_errors(tmp_path: Path) -> None:
    doc = document(load([config_folder(tmp_path)]))
    assert doc["openapi"] == "3.1.0"
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "api_token"}
    typed = doc["paths"]["/api/1.1/wf/typed"]["post"]
    body = typed["requestBody"]
    assert set(body["content"]) == {"application/json", "application/x-www-form-urlencoded",
                                    "multipart/form-data"}
    schema = body["content"]["application/json"]["schema"]
    assert schema["required"] == ["text"]
    props = schema["properties"]
    assert props["number"] == {"type": "number", "default": 1.5}
    assert props["texts"] == {"type": "array", "items": {"type": "string", "minLength": 1}}
    assert props["date"]["format"] == "date-time"
    assert "source" not in props
    assert typed["parameters"] == [{"name": "source", "in": "query", "required": False,
                                    "schema": {"type": "string", "minLength": 1}}]
    assert {"200", "201", "400", "401", "418", "500", "503", "413"} <= set(typed["responses"])
    assert typed["security"][0] == {}  # public: no credential needed
    get = doc["paths"]["/api/1.1/wf/typed-get"]["get"]
    assert "requestBody" not in get
    assert [p["name"] for p in get["parameters"]] == ["q", "n", "flags"]
    assert get["parameters"][2]["explode"] is True
    assert "403" in get["responses"] and {} not in get["security"]
    status = doc["paths"]["/api/1.1/wf/status"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in status
    assert "/api/1.1/wf/signup" in doc["paths"]
    assert {"/api/1.1/wf/stripe-events", "/api/1.1/wf/github-push", "/api/1.1/wf/email-rates",
            "/api/1.1/wf/contact-changed"} <= set(doc["paths"])  # the folders of examples/
    assert all("wf/normalize-email" not in path for path in doc["paths"])  # an event


@pytest.fixture
async def app_client(serve: Serve, tmp_path: Path, storage_url: str
                     ) -> AsyncIterator[tuple[httpx.AsyncClient, str, str]]:
    """An in-process client, an admin key and a user's token, on each database."""
    async with serve(config_folder(tmp_path), storage_url) as gateway:
        key = await _admin_key(gateway.storage)
        signed = await gateway.client.post("/api/1.1/wf/signup", json={
            "email": "u@example.com", "password": "correct horse"})
        yield gateway.client, key, signed.json()["response"]["token"]


async def _admin_key(storage: Any) -> str:
    key = new_key()
    await storage.keys.create_key("openapi-test", key_hash(key), utc_now())
    return key


async def test_the_document_needs_an_admin_key(
        app_client: tuple[httpx.AsyncClient, str, str], tmp_path: Path) -> None:
    client, key, token = app_client
    anonymous = await client.get(PATH)
    assert anonymous.status_code == 401
    assert anonymous.json()["body"]["status"] == "UNAUTHORIZED"
    user = await client.get(PATH, headers={"Authorization": f"Bearer {token}"})
    assert user.status_code == 403 and user.json()["body"]["status"] == "FORBIDDEN"
    bad = await client.get(PATH, params={"api_token": "x" * 40})
    assert bad.status_code == 401
    for hostile in ("Bearer " + "x" * 100_000, "Bearer \x00", "Basic abc", "Bearer"):
        refused = await client.get(PATH, headers={"Authorization": hostile})
        assert refused.status_code == 401 and refused.json()["body"]["status"] == "UNAUTHORIZED"
    admin = await client.get(PATH, params={"api_token": key})
    assert admin.status_code == 200
    assert admin.headers["content-type"] == "application/json"
    served = admin.json()
    printed = CliRunner().invoke(main, ["openapi", str(tmp_path / "config")])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output) == served


async def test_openapi_public_serves_it_to_anyone(serve: Serve, tmp_path: Path) -> None:
    folder = config_folder(tmp_path)
    settings = _settings_of(folder)  # the examples' own, and one key more
    write_settings(folder, {**settings, "openapi": {"public": True}})
    async with serve(folder) as gateway:
        response = await gateway.client.get(PATH)
        assert response.status_code == 200
        assert "/api/1.1/wf/typed" in response.json()["paths"]
        # A credential that is not valid is still refused, as on every endpoint.
        refused = await gateway.client.get(PATH, headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 200  # public: the credential is not even read


# --- fuzzing a real server --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`gateway serve` on loopback over the examples and the typed workflows; its URL and an
    admin key."""
    root = tmp_path_factory.mktemp("openapi")
    folder = config_folder(root)
    with rates_api() as rates, smtp_server() as (_, smtp_port):
        settings = _settings_of(folder)  # the examples' mail goes to the server above
        assert settings["smtp"]["host"] == "localhost"
        settings["smtp"].update(host="127.0.0.1", port=smtp_port)
        write_settings(folder, settings)
        yield from _serve(root, folder, {**EXAMPLE_SECRETS, "RATES_API_URL": rates})


def _serve(root: Path, folder: Path, environ: dict[str, str]) -> Iterator[tuple[str, str]]:
    database = f"sqlite:///{root / 'gateway.db'}"
    made = CliRunner().invoke(main, ["keys", "create", "--label", "fuzz", "--config",
                                     str(folder), "--database", database])
    assert made.exit_code == 0, made.output
    key = made.output.strip().splitlines()[-1]
    port = _free_port()
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(folder), "--port", str(port),
         "--database", database], cwd=root, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **environ})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url, process, root / "server.log")
        yield url, key
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(httpx.TransportError):
                if client.get(url + "/healthz").status_code == 200:
                    return
            time.sleep(0.05)  # polling a condition, with a deadline that says what it waits for
    raise AssertionError(f"the server did not answer /healthz within 30 s:\n{log.read_text()}")


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


def test_every_answer_is_documented(live_server: tuple[str, str]) -> None:
    url, key = live_server
    auth = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_dict(httpx.get(url + PATH, headers=auth).json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def answers_as_documented(case: Any) -> None:
            case.call_and_validate(base_url=url, headers=auth, checks=CHECKS)

        answers_as_documented()
