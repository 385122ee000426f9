"""Detecting a webhook sender's request for a workflow not written yet, as Bubble's
"detect request data" does, on both databases: a window opened by `gateway detect
--start`, the first POST to .../initialize kept (its headers when asked, never its
credentials), every other request the 404 of an unknown workflow, and `gateway detect
--from-last` printing the parameters as YAML."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from conftest import served

from gateway.api.auth import key_hash, new_key
from gateway.cli import main
from gateway.storage import Storage

CONFIG = """\
kind: settings
limits: {max_body_bytes: 2000}
---
kind: api_workflow
name: open-hook
expose: true
auth: none
steps: [{action: terminate}]
---
kind: api_workflow
name: users-only
expose: true
auth: user
steps: [{action: terminate}]
"""
SAMPLE = {"id": "evt_1", "amount": 1250, "paid": True, "created": "2026-12-01T10:00:00Z",
          "tags": ["a", "b"], "customer": {"email": "ada@example.com"}}


@dataclass
class World:
    client: httpx.AsyncClient
    storage: Storage
    folder: Path
    database: str
    admin: dict[str, str]

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["detect", *args, "--config", str(self.folder),
                                         "--database", self.database])

    async def open(self, name: str, headers: bool = False,
                   lasting: timedelta = timedelta(minutes=5)) -> None:
        now = datetime.now(UTC)
        await self.storage.detections.open_detection(name, now + lasting, headers, now)


@pytest.fixture
async def world(tmp_path: Path, storage_url: str) -> AsyncIterator[World]:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "main.yaml").write_text(CONFIG)
    async with served(folder, storage_url) as gateway:
        assert gateway.storage is not None
        key = new_key()
        await gateway.storage.keys.create_key("admin", key_hash(key), datetime.now(UTC))
        yield World(gateway.client, gateway.storage, folder, storage_url,
                    {"Authorization": f"Bearer {key}"})


def unknown(answer: httpx.Response, name: str) -> bool:
    return answer.status_code == 404 and answer.json()["body"]["message"] == \
        f"No workflow named {name} is exposed"


async def test_the_first_request_is_kept_and_printed(world: World) -> None:
    assert unknown(await world.client.post("/api/1.1/wf/stripe-events/initialize",
                                           json=SAMPLE), "stripe-events")
    await world.open("stripe-events", headers=True)
    first = await world.client.post(
        "/api/1.1/wf/stripe-events/initialize?mode=test", json=SAMPLE,
        headers={"Stripe-Signature": "t=1,v1=abc", "Authorization": "Bearer secret-token",
                 "Cookie": "session=secret-cookie"})
    assert first.status_code == 200, first.text
    assert first.json()["response"]["detected"] == sorted([*SAMPLE, "mode"])
    again = await world.client.post("/api/1.1/wf/stripe-events/initialize", json={"x": 1})
    assert unknown(again, "stripe-events")  # the window closed with its first sample
    printed = await asyncio.to_thread(world.cli, "--from-last", "stripe-events")
    assert printed.exit_code == 0, printed.output
    text = printed.stdout
    for line in ("amount:", "type: integer", "paid:", "type: boolean", "created:",
                 "type: date", "tags:", "list: true", "customer:", "type: object", "mode:",
                 "#   stripe-signature: t=1,v1=abc"):
        assert line in text, line
    assert "secret-token" not in text and "secret-cookie" not in text
    assert "authorization" not in text.lower()


async def test_headers_are_kept_only_when_asked(world: World) -> None:
    await world.open("plain")
    answer = await world.client.post("/api/1.1/wf/plain/initialize", json={"a": 1},
                                     headers={"X-Custom": "seen"})
    assert answer.status_code == 200
    printed = await asyncio.to_thread(world.cli, "--from-last", "plain")
    assert "a:" in printed.stdout and "x-custom" not in printed.stdout


async def test_a_flood_keeps_one_sample(world: World) -> None:
    await world.open("flooded")
    answers = await asyncio.gather(*(world.client.post(
        "/api/1.1/wf/flooded/initialize", json={"n": n}) for n in range(40)))
    assert sorted(a.status_code for a in answers) == [200] + [404] * 39
    found = await world.storage.detections.find_detection("flooded")
    assert found is not None and found.sample is not None


async def test_an_expired_window_keeps_nothing(world: World) -> None:
    await world.open("late", lasting=timedelta(seconds=-1))
    assert unknown(await world.client.post("/api/1.1/wf/late/initialize", json={"a": 1}),
                   "late")
    printed = await asyncio.to_thread(world.cli, "--from-last", "late")
    assert printed.exit_code == 1 and "closed without one" in printed.output


async def test_a_refused_body_leaves_the_window_open(world: World) -> None:
    """Refused requests answer as with no window, so probing tells nothing of one."""
    async def probes(name: str) -> list[httpx.Response]:
        url = f"/api/1.1/wf/{name}/initialize"
        return [await world.client.post(url, json={"a": "x" * 5000}),
                await world.client.post(url, content=b"{not json",
                                        headers={"Content-Type": "application/json"}),
                await world.client.get(url), await world.client.delete(url)]

    closed = [(a.status_code, a.json()) for a in await probes("careful")]
    await world.open("careful")
    opened = [(a.status_code, a.json()) for a in await probes("careful")]
    assert opened == closed and {status for status, _ in opened} == {404}
    waiting = await asyncio.to_thread(world.cli, "--from-last", "careful")
    assert waiting.exit_code == 1 and "is open until" in waiting.output
    ok = await world.client.post("/api/1.1/wf/careful/initialize", json={"a": 1})
    assert ok.status_code == 200


async def test_existing_workflows_in_detection_mode(world: World) -> None:
    # auth: none needs no admin key while detecting; other workflows still do
    await world.open("open-hook")
    bad = await world.client.post("/api/1.1/wf/open-hook/initialize", content=b"{x",
                                  headers={"Content-Type": "application/json"})
    assert bad.status_code == 401  # as without a window: no admin key
    answer = await world.client.post("/api/1.1/wf/open-hook/initialize", json={"a": 1})
    assert answer.status_code == 200, answer.text
    await world.open("users-only")
    refused = await world.client.post("/api/1.1/wf/users-only/initialize", json={"a": 1})
    assert refused.status_code == 401
    assert (await world.client.get("/api/1.1/wf/users-only/initialize")).status_code == 405
    taken = await world.client.post("/api/1.1/wf/users-only/initialize", json={"a": 1},
                                    headers=world.admin)
    assert taken.status_code == 200
    # out of detection mode, initialize answers YAML to admin keys, as before
    yaml = await world.client.post("/api/1.1/wf/open-hook/initialize", json={"b": True},
                                   headers=world.admin)
    assert yaml.status_code == 200 and "b:" in yaml.text
    assert (await world.client.post("/api/1.1/wf/open-hook/initialize",
                                    json={"b": True})).status_code == 401


def test_the_command_line(tmp_path: Path, storage_url: str) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "main.yaml").write_text(CONFIG)

    def cli(*args: str) -> Result:
        return CliRunner().invoke(main, ["detect", *args, "--config", str(folder),
                                         "--database", storage_url])

    started = cli("--start", "new-hook", "--for", "1h", "--headers")
    assert started.exit_code == 0, started.output
    assert "POST /api/1.1/wf/new-hook/initialize" in started.stdout
    assert cli("--from-last", "never-opened").exit_code == 1
    for args in (("--start", "x", "--for", "8d"), ("--start", "x", "--for", "soon"),
                 ("--start", "a/b"), ("--start", "x", "--from-last", "x"), ()):
        assert cli(*args).exit_code == 2, args
