"""Hot reload: a valid config swapped in whole (requests in flight finish on the old one, no
request fails), an invalid one refused with the located diagnostics of `gateway validate`,
data types and indexes applied first (or the reload refused), by SIGHUP or a file change."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import served
from starlette.applications import Starlette

from gateway.api.auth import key_hash, new_key
from gateway.core.clock import utc_now

ECHO = """\
kind: api_workflow
name: echo
expose: true
auth: none
params: {word: {type: text}}
steps:
  - action: return_data
    data: {version: %d, word: "{{ params.word }}"}
"""
NOTE = """\
kind: data_type
name: note
fields:
  text: {type: text%s}
---
kind: api_workflow
name: note
expose: true
auth: none
params: {text: {type: text}}
steps:
  - id: note
    action: create_thing
    type: note
    fields: {text: "{{ params.text }}"}
  - action: return_data
    data: {id: "{{ steps.note._id }}"}
"""

JOIN = """\
kind: api_workflow
name: join
expose: true
auth: none
params: {email: {type: text}}
steps:
  - action: signup_user
    email: "{{ params.email }}"
    password: correct horse
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "echo.yaml").write_text(ECHO % 1)
    return folder


@contextlib.asynccontextmanager
async def serving(folder: Path, database: str, *, watch: bool = False
                  ) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    async with served(folder, database, reload=True, watch=watch) as gateway:
        yield gateway.app, gateway.client


async def ready(app: Starlette, client: httpx.AsyncClient) -> Any:
    """What `/readyz` tells an admin key (the reload's diagnostics included)."""
    key = new_key()
    await app.state.storage.keys.create_key(key[:8], key_hash(key), utc_now())
    answer = await client.get("/readyz", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def echo(client: httpx.AsyncClient, word: str = "hi") -> Any:
    response = await client.post("/api/1.1/wf/echo", json={"word": word})
    assert response.status_code == 200, response.text
    return response.json()["response"]["version"]


async def test_a_valid_config_is_swapped_in(folder: Path, storage_url: str) -> None:
    async with serving(folder, storage_url) as (app, client):
        before = await ready(app, client)
        assert await echo(client) == 1
        (folder / "echo.yaml").write_text(ECHO % 2)
        (folder / "more.yaml").write_text((ECHO % 3).replace("name: echo", "name: more"))
        assert await app.state.reloader.reload("test") is True
        assert await echo(client) == 2
        assert (await client.post("/api/1.1/wf/more", json={"word": "x"})).status_code == 200
        after = await ready(app, client)
        assert after["version"] != before["version"] and len(after["version"]) == 12
        assert after["reload_error"] is None and after["workflows"] == 2


async def test_an_invalid_config_is_refused_with_located_diagnostics(
        folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with serving(folder, f"sqlite:///{tmp_path / 'g.db'}") as (app, client):
        version = (await client.get("/readyz")).json()["version"]
        (folder / "echo.yaml").write_text((ECHO % 2).replace("auth: none", "auth: nobody"))
        with caplog.at_level(logging.ERROR, logger="gateway.reload"):
            assert await app.state.reloader.reload("test") is False
        located = f"{folder / 'echo.yaml'}:4:7: error[schema.enum]: 'nobody' is not one of"
        assert located in caplog.text
        assert "the previous config keeps serving" in caplog.text
        assert await echo(client) == 1
        told = await ready(app, client)
        assert told["version"] == version and told["reload_refused"] is True
        assert located in told["reload_error"]
        (folder / "echo.yaml").write_text(ECHO % 3)
        assert await app.state.reloader.reload("test") is True
        assert (await ready(app, client))["reload_error"] is None
        assert await echo(client) == 3


async def test_only_an_admin_key_reads_a_refused_reload_s_diagnostics(
        folder: Path, storage_url: str) -> None:
    (folder / "join.yaml").write_text(JOIN)
    async with serving(folder, storage_url) as (app, client):
        (folder / "secret-hook.yaml").write_text(
            (ECHO % 2).replace("name: echo", "name: secret-hook").replace("expose: true",
                                                                          "expose: false")
            .replace("auth: none", "auth: nobody"))
        assert await app.state.reloader.reload("test") is False
        joined = await client.post("/api/1.1/wf/join", json={"email": "ada@example.com"})
        user = {"Authorization": f"Bearer {joined.json()['response']['token']}"}
        answers = [await client.get("/readyz"), await client.get("/readyz", headers=user),
                   await client.get("/readyz", headers={"Authorization": "Bearer wrong"}),
                   await client.get("/readyz", params={"api_token": "wrong"})]
        told = await ready(app, client)
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert set(answer.json()) == {"status", "version", "reload_refused"}
        assert answer.json()["reload_refused"] is True
        assert "secret-hook" not in answer.text and str(folder) not in answer.text
    assert "secret-hook.yaml" in told["reload_error"] and told["workflows"] == 2


async def test_a_hostile_config_is_refused_and_the_server_keeps_answering(
        folder: Path, tmp_path: Path) -> None:
    bomb = "kind: settings\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + n)}: &{chr(98 + n)} [*{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, "
        f"*{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, "
        f"*{chr(97 + n)}]\n" for n in range(8))
    async with serving(folder, f"sqlite:///{tmp_path / 'g.db'}") as (app, client):
        (folder / "bomb.yaml").write_text(bomb)
        (folder / "binary.yaml").write_bytes(b"\xff\xfe\x00kind: \x00")
        assert await app.state.reloader.reload("test") is False
        assert "yaml.alias-limit" in app.state.reload_error
        assert await echo(client) == 1
        (folder / "bomb.yaml").unlink()
        (folder / "binary.yaml").unlink()
        assert await app.state.reloader.reload("test") is True


async def test_new_types_and_indexes_apply_or_the_reload_is_refused(
        folder: Path, storage_url: str) -> None:
    async with serving(folder, storage_url) as (app, client):
        (folder / "note.yaml").write_text(NOTE % "")
        assert await app.state.reloader.reload("a new type") is True
        for _ in range(2):
            made = await client.post("/api/1.1/wf/note", json={"text": "same"})
            assert made.status_code == 200, made.text
        # Unique now, over values already duplicated: the index cannot be built.
        (folder / "note.yaml").write_text(NOTE % ", unique: true")
        assert await app.state.reloader.reload("unique") is False
        assert "cannot be applied" in app.state.reload_error
        again = await client.post("/api/1.1/wf/note", json={"text": "same"})
        assert again.status_code == 200  # the old config (no unique index) still serves
        (folder / "note.yaml").write_text((NOTE % ", unique: true").replace(
            "name: note\nfields", "name: memo\nfields").replace("type: note", "type: memo"))
        assert await app.state.reloader.reload("unique on a new type") is True
        assert (await client.post("/api/1.1/wf/note", json={"text": "x"})).status_code == 200
        duplicate = await client.post("/api/1.1/wf/note", json={"text": "x"})
        assert duplicate.status_code == 409


async def test_the_database_cannot_change_on_a_reload(folder: Path, tmp_path: Path) -> None:
    async with serving(folder, f"sqlite:///{tmp_path / 'g.db'}") as (app, client):
        (folder / "settings.yaml").write_text(
            f"kind: settings\ndatabase: sqlite:///{tmp_path / 'other.db'}\n")
        os.environ.pop("GATEWAY_DATABASE_URL", None)
        assert await app.state.reloader.reload("test") is False
        assert "database cannot change" in app.state.reload_error
        assert await echo(client) == 1


async def test_a_secret_missing_from_the_environment_is_refused_as_at_start(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELOAD_HOOK_SECRET", raising=False)
    async with serving(folder, f"sqlite:///{tmp_path / 'g.db'}") as (app, client):
        (folder / "settings.yaml").write_text("kind: settings\nsecrets: [RELOAD_HOOK_SECRET]\n")
        (folder / "echo.yaml").write_text(ECHO % 2)
        assert await app.state.reloader.reload("test") is False
        assert "RELOAD_HOOK_SECRET" in app.state.reload_error
        assert (await ready(app, client))["reload_error"] == app.state.reload_error
        assert await echo(client) == 1  # the running config goes on
        monkeypatch.setenv("RELOAD_HOOK_SECRET", "s3cret")
        assert await app.state.reloader.reload("test") is True
        assert await echo(client) == 2


async def test_a_standard_webhooks_secret_that_is_no_key_is_refused_as_at_start(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELOAD_HOOK_SECRET", "whsec_not-base64!")
    async with serving(folder, f"sqlite:///{tmp_path / 'g.db'}") as (app, client):
        (folder / "settings.yaml").write_text("kind: settings\nsecrets: [RELOAD_HOOK_SECRET]\n")
        (folder / "echo.yaml").write_text(ECHO % 2 + "verify: {scheme: standard-webhooks, "
                                          "secret: '{{ secrets.RELOAD_HOOK_SECRET }}'}\n")
        assert await app.state.reloader.reload("test") is False
        assert "workflow echo: a standard-webhooks secret" in app.state.reload_error
        assert "not-base64" not in app.state.reload_error
        assert await echo(client) == 1  # the running config goes on
        monkeypatch.setenv("RELOAD_HOOK_SECRET", "whsec_" + "c2VjcmV0LWtleQ==")
        assert await app.state.reloader.reload("test") is True


async def test_a_request_in_flight_finishes_on_the_config_it_started_with(
        folder: Path, tmp_path: Path) -> None:
    async with serving(folder, f"sqlite:///{tmp_path / 'g.db'}") as (app, client):
        reloaded = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield b'{"word": '
            await reloaded.wait()
            yield b'"late"}'

        slow = asyncio.create_task(client.post(
            "/api/1.1/wf/echo", content=body(), headers={"content-type": "application/json"}))
        for _ in range(100):  # let the request reach its route and wait for its body
            await asyncio.sleep(0)
        assert not slow.done()
        (folder / "echo.yaml").write_text(ECHO % 2)
        assert await app.state.reloader.reload("test") is True
        reloaded.set()
        assert (await slow).json()["response"] == {"version": 1, "word": "late"}
        assert await echo(client) == 2


async def test_no_request_fails_across_ten_reloads_under_concurrent_requests(
        folder: Path, storage_url: str) -> None:
    async with serving(folder, storage_url) as (app, client):
        stop = asyncio.Event()
        answers: list[int] = []
        failures: list[str] = []

        async def caller() -> None:
            while not stop.is_set():
                await asyncio.sleep(0)  # an in-process request may never yield on its own
                response = await client.post("/api/1.1/wf/echo", json={"word": "x"})
                if response.status_code != 200:
                    failures.append(response.text)
                else:
                    answers.append(response.json()["response"]["version"])

        callers = [asyncio.create_task(caller()) for _ in range(32)]
        for version in range(2, 12):
            (folder / "echo.yaml").write_text(ECHO % version)
            assert await app.state.reloader.reload(f"reload {version}") is True
            seen = len(answers)
            while len(answers) < seen + 32:  # some requests served between reloads
                await asyncio.sleep(0)
        stop.set()
        await asyncio.gather(*callers)
        assert failures == []
        assert set(answers) <= set(range(1, 12)) and 11 in answers
        assert await echo(client) == 11
        assert app.state.reloader.reloads == 10


async def test_a_file_change_reloads_when_watching(folder: Path, tmp_path: Path) -> None:
    async with serving(folder, f"sqlite:///{tmp_path / 'g.db'}", watch=True) as (app, client):
        reloads = app.state.reloader.reloads
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # Rewritten until seen: the watcher may still be starting when the first lands.
            (folder / "echo.yaml").write_text(ECHO % 2)
            with contextlib.suppress(AssertionError):
                if app.state.reloader.reloads > reloads and await echo(client) == 2:
                    return
            await asyncio.sleep(0.1)  # polling a condition, with a deadline
        raise AssertionError("the change was not reloaded within 30 s")


# --- a real server: SIGHUP ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(folder: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = _free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(folder), "--port",
             str(port), "--database", f"sqlite:///{tmp_path / 'g.db'}", "--log-format", "json"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until(lambda: _get(url + "/healthz") == 200, "/healthz answers", process, log)
            yield process, url, log
        finally:
            process.terminate()
            process.wait(timeout=20)


def _get(url: str) -> int | None:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(url, timeout=1.0).status_code
    return None


def _version(url: str) -> Any:
    with contextlib.suppress(httpx.TransportError):
        return httpx.post(url + "/api/1.1/wf/echo", json={"word": "x"},
                          timeout=1.0).json()["response"]["version"]
    return None


def _wait_until(condition: Any, what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        if condition():
            return
        time.sleep(0.05)  # polling a condition, with a deadline that says what it waits for
    raise AssertionError(f"not within 30 s: {what}\n{log.read_text()}")


def test_sighup_reloads_a_running_server_and_refuses_a_bad_edit(
        server: tuple[subprocess.Popen[bytes], str, Path], folder: Path) -> None:
    process, url, log = server
    assert _version(url) == 1
    (folder / "echo.yaml").write_text(ECHO % 2)
    process.send_signal(signal.SIGHUP)
    _wait_until(lambda: _version(url) == 2, "version 2 answers", process, log)
    (folder / "echo.yaml").write_text("kind: api_workflow\nname: echo\nauth: none\nsteps: 7\n")
    process.send_signal(signal.SIGHUP)
    _wait_until(lambda: "config reload refused" in log.read_text(), "the refusal is logged",
                process, log)
    assert _version(url) == 2
    text = log.read_text()
    assert f"{folder / 'echo.yaml'}:4:8: error[schema.type]" in text
    state = httpx.get(url + "/readyz").json()  # anonymous: the state, not the diagnostics
    assert state["reload_refused"] is True and "reload_error" not in state
    assert str(folder) not in json.dumps(state)
    # JSON logs: every request a line with its run.
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    runs = [line for line in lines if line.get("logger") == "gateway.access"
            and line.get("workflow") == "echo"]
    assert runs and {"run_id", "status", "duration_ms", "http_status"} <= set(runs[-1])


@pytest.mark.postgres
def test_sighup_with_two_workers_replaces_them_and_keeps_them_on_a_bad_edit(
        folder: Path, tmp_path: Path, postgres_url: str) -> None:
    port = _free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(folder), "--port",
             str(port), "--database", postgres_url, "--workers", "2"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until(lambda: _version(url) == 1, "version 1 answers", process, log)
            (folder / "echo.yaml").write_text(ECHO % 2)
            process.send_signal(signal.SIGHUP)
            # Every worker replaced: many answers in a row, all from the new config.
            _wait_until(lambda: all(_version(url) == 2 for _ in range(20)),
                        "every worker answers version 2", process, log)
            (folder / "echo.yaml").write_text((ECHO % 3).replace("auth: none", "auth: x"))
            process.send_signal(signal.SIGHUP)
            _wait_until(lambda: "this worker does not start" in log.read_text(),
                        "the new worker's refusal", process, log)
            assert f"{folder / 'echo.yaml'}:4:7: error[schema.enum]" in log.read_text()
            assert all(_version(url) == 2 for _ in range(20))
        finally:
            process.terminate()
            process.wait(timeout=30)
