"""Idempotency keys on both backends: a repeated key replays the first answer and runs
nothing; a duplicate of a running request gets 409; a crashed run's key frees itself at the
end of its lease; 1,000 concurrent deliveries run once, in one process and in two."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import served
from starlette.requests import Request
from support import Clock

from gateway.api.auth import is_bearer, key_hash, new_key
from gateway.api.workflow_endpoints import request_facts
from gateway.compiler.loader import load
from gateway.runtime.coercion import gather
from gateway.server.app import create_app
from gateway.storage import Storage, open_storage
from tests.server.test_serve_process import Server, start, stop

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

CONFIG = """\
kind: data_type
name: delivery
fields: {event: {type: text}}
---
kind: api_workflow
name: hook
expose: true
auth: none
idempotency: {key: "{{ params.id }}", ttl: 1h}
params:
  id: {type: text}
  fail: {type: integer, optional: true}
steps:
  - {action: create_thing, type: delivery, fields: {event: "{{ params.id }}"}}
  - {action: fail, status: "{{ params.fail }}", code: BROKEN, message: broken,
     only_when: "{{ params.fail }}"}
  - action: return_data
    status: 201
    headers: {X-Event: "{{ params.id }}"}
    data: {id: "{{ params.id }}"}
---
kind: api_workflow
name: by-header
expose: true
auth: none
idempotency: {key: "{{ request.headers['idempotency-key'] }}"}
steps:
  - {action: create_thing, type: delivery, fields: {event: header}}
---
kind: api_workflow
name: by-template
expose: true
auth: none
idempotency: {key: "{{ request.headers['idempotency-key'] | string }}"}
steps:
  - {action: create_thing, type: delivery, fields: {event: template}}
---
kind: api_workflow
name: by-header-seen
expose: true
auth: none
idempotency: {key: "{{ request.headers['idempotency-key'] }}"}
steps:
  - action: return_data
    data: {method: "{{ request.method }}"}
"""


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, database: str, clock: Clock | None = None,
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, Storage]]:
    config = tmp_path / "config"  # a folder: a test may add a file of its own to it
    config.mkdir(parents=True, exist_ok=True)
    (config / "w.yaml").write_text(CONFIG)
    async with served(config, database, clock=clock or Clock(NOW)) as served_app:
        yield served_app.client, served_app.storage


async def deliveries(storage: Storage) -> int:
    return (await storage.records.search("delivery", [], [], 10)).count


def key_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_a_repeated_key_replays_the_first_answer(tmp_path: Path, storage_url: str) -> None:
    async with gateway(tmp_path, storage_url) as (client, storage):
        first = await client.post("/api/1.1/wf/hook", json={"id": "evt_1"})
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        again = await client.post("/api/1.1/wf/hook", json={"id": "evt_1"})
        assert again.status_code == 201
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["x-event"] == "evt_1"
        assert again.headers["x-run-id"] == first.headers["x-run-id"]
        assert again.headers["content-type"] == first.headers["content-type"]
        other = await client.post("/api/1.1/wf/hook", json={"id": "evt_2"})
        assert "idempotent-replayed" not in other.headers
        assert await deliveries(storage) == 2


async def test_a_failed_run_gives_its_key_up_and_a_refusal_is_replayed(
        tmp_path: Path, storage_url: str) -> None:
    async with gateway(tmp_path, storage_url) as (client, storage):
        failed = await client.post("/api/1.1/wf/hook", json={"id": "evt_1", "fail": 503})
        assert failed.status_code == 503
        retried = await client.post("/api/1.1/wf/hook", json={"id": "evt_1"})
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers
        refused = await client.post("/api/1.1/wf/hook", json={"id": "evt_2", "fail": 422})
        assert refused.status_code == 422
        replayed = await client.post("/api/1.1/wf/hook", json={"id": "evt_2"})
        assert replayed.status_code == 422
        assert replayed.headers["idempotent-replayed"] == "true"
        assert await deliveries(storage) == 1  # the runs that failed left no record behind


async def test_a_duplicate_of_a_running_request_is_409(tmp_path: Path, storage_url: str) -> None:
    async with gateway(tmp_path, storage_url) as (client, storage):
        claim = await storage.idempotency.claim("hook", key_of("evt_1"), "other", NOW,
                                                NOW + timedelta(minutes=5),
                                                NOW + timedelta(hours=1))
        assert claim.state == "claimed"
        response = await client.post("/api/1.1/wf/hook", json={"id": "evt_1"})
        assert response.status_code == 409, response.text
        assert response.json()["body"]["status"] == "IN_PROGRESS"
        await storage.runs.flush_runs()
        run = await storage.runs.get_run(response.headers["x-run-id"])
        assert run is not None and run["error"]["code"] == "IN_PROGRESS"
        assert await deliveries(storage) == 0


async def test_a_crashed_runs_key_frees_itself_when_its_lease_ends(
        tmp_path: Path, storage_url: str) -> None:
    clock = Clock(NOW)
    async with gateway(tmp_path, storage_url, clock) as (client, storage):
        # A run that crashed: its claim was never finished nor released.
        await storage.idempotency.claim("hook", key_of("evt_1"), "crashed", NOW,
                                        NOW + timedelta(seconds=300), NOW + timedelta(hours=1))
        clock.now = NOW + timedelta(seconds=299)
        assert (await client.post("/api/1.1/wf/hook", json={"id": "evt_1"})).status_code == 409
        clock.now = NOW + timedelta(seconds=301)  # the lease (limits.run_timeout) is over
        assert (await client.post("/api/1.1/wf/hook", json={"id": "evt_1"})).status_code == 201
        assert await deliveries(storage) == 1


SLOW = """\
kind: api_workflow
name: slow
expose: true
auth: none
idempotency: {key: "{{ params.id }}"}
params: {id: {type: text}, url: {type: text}}
steps:
  - {action: create_thing, type: delivery, fields: {event: "{{ params.id }}"}}
  - {action: http_request, url: "{{ params.url }}", timeout: 30s}
"""


async def test_a_run_whose_key_was_taken_over_keeps_none_of_its_writes(
        tmp_path: Path, storage_url: str) -> None:
    """A run outlives its lease (the clock jumps past it while the run waits on a call),
    and a redelivery claims the key and runs: the first run's record is rolled back as it
    commits, and it answers 409, so that the event is written once."""
    release = asyncio.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "slow.yaml").write_text(SLOW)
    clock = Clock(NOW)
    try:
        async with gateway(tmp_path, storage_url, clock) as (client, storage):
            first = asyncio.ensure_future(client.post("/api/1.1/wf/slow",
                                                      json={"id": "evt_1", "url": url}))
            await asyncio.sleep(0.3)  # the first run is in its call
            clock.now = NOW + timedelta(seconds=301)  # past its lease (limits.run_timeout)
            second = asyncio.ensure_future(client.post("/api/1.1/wf/slow",
                                                       json={"id": "evt_1", "url": url}))
            await asyncio.sleep(0.2)
            release.set()
            first_answer, second_answer = await first, await second
            assert second_answer.status_code == 200, second_answer.text
            assert first_answer.status_code == 409, first_answer.text
            assert "took it over" in first_answer.json()["body"]["message"]
            assert await deliveries(storage) == 1
            replay = await client.post("/api/1.1/wf/slow", json={"id": "evt_1", "url": url})
            assert replay.headers["idempotent-replayed"] == "true"
            assert replay.headers["x-run-id"] == second_answer.headers["x-run-id"]
    finally:
        server.close()


async def test_keys_are_each_callers_own(tmp_path: Path, storage_url: str) -> None:
    """The same key from another caller is another key: anonymous senders share the
    workflow's keys, and each API key (each user) has its own, so that no caller is ever
    replayed another's answer."""
    async with gateway(tmp_path, storage_url) as (client, storage):
        keys = [new_key(), new_key()]
        for name, key in zip(("ops", "ci"), keys, strict=True):
            await storage.keys.create_key(name, key_hash(key), NOW)
        runs = []
        for key in (None, *keys):
            headers = {} if key is None else {"Authorization": f"Bearer {key}"}
            answer = await client.post("/api/1.1/wf/hook", json={"id": "evt_1"},
                                       headers=headers)
            assert answer.status_code == 201 and "idempotent-replayed" not in answer.headers
            runs.append(answer.headers["x-run-id"])
        again = await client.post("/api/1.1/wf/hook", json={"id": "evt_1"},
                                  headers={"Authorization": f"Bearer {keys[1]}"})
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["x-run-id"] == runs[2]
        assert await deliveries(storage) == 3


async def test_a_claim_the_database_cannot_decide_is_a_recorded_503(tmp_path: Path) -> None:
    async with gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}") as (client, storage):
        await storage.connector.writer.stop()  # type: ignore[attr-defined]
        response = await client.post("/api/1.1/wf/hook", json={"id": "evt_1"})
        assert response.status_code == 503, response.text
        assert response.json()["body"]["status"] == "UNAVAILABLE"
        assert "x-run-id" in response.headers


async def test_an_answer_is_replayed_for_the_ttl_only(tmp_path: Path, storage_url: str) -> None:
    clock = Clock(NOW)
    async with gateway(tmp_path, storage_url, clock) as (client, storage):
        await client.post("/api/1.1/wf/hook", json={"id": "evt_1"})
        clock.now = NOW + timedelta(minutes=59)
        again = await client.post("/api/1.1/wf/hook", json={"id": "evt_1"})
        assert again.headers.get("idempotent-replayed") == "true"
        clock.now = NOW + timedelta(hours=1, seconds=1)
        later = await client.post("/api/1.1/wf/hook", json={"id": "evt_1"})
        assert "idempotent-replayed" not in later.headers
        assert await deliveries(storage) == 2
        # Both answers have expired. PostgreSQL keeps one a key: it goes. SQLite appends
        # each answer a key was given and keeps its newest answer, expired or not: the first
        # goes, here or in the gateway's own retention pass at start, if that ran after the
        # clock moved on (a loaded machine).
        purged = await storage.idempotency.purge_keys(NOW + timedelta(hours=3))
        if storage_url.startswith("sqlite"):
            with sqlite3.connect(storage.url.removeprefix("sqlite:///")) as conn:
                left = conn.execute("SELECT status FROM gateway_idempotency_answers").fetchall()
            assert purged in (0, 1) and len(left) == 1
        else:
            assert purged == 1
        assert await storage.idempotency.purge_keys(NOW + timedelta(hours=3)) == 0


async def test_a_key_from_a_header_and_a_request_without_it(tmp_path: Path,
                                                            storage_url: str) -> None:
    async with gateway(tmp_path, storage_url) as (client, storage):
        missing = await client.post("/api/1.1/wf/by-header")
        assert missing.status_code == 400, missing.text
        assert missing.json()["body"]["status"] == "INVALID_DATA"
        assert "idempotency key" in missing.json()["body"]["message"]
        headers = {"Idempotency-Key": "k" * 100_000}  # a long key is hashed: bounded
        first = await client.post("/api/1.1/wf/by-header", headers=headers)
        second = await client.post("/api/1.1/wf/by-header", headers=headers)
        assert first.status_code == second.status_code == 200
        assert second.headers["idempotent-replayed"] == "true"
        assert await deliveries(storage) == 1


async def test_a_key_read_straight_from_its_header_hashes_as_its_template_would(
        tmp_path: Path, storage_url: str) -> None:
    # `by-header`'s key is exactly a header (read from the request as it came, `request` not
    # built); `by-template`'s goes through its template: the same header, the same key.
    async with gateway(tmp_path, storage_url) as (client, storage):
        registry = client._transport.app.state.registry  # type: ignore[attr-defined]
        direct, templated, seen = (registry.workflows[name] for name in
                                   ("by-header", "by-template", "by-header-seen"))
        assert direct.hooks.idempotency_header == "idempotency-key" and not direct.uses_request
        assert templated.hooks.idempotency_header == "" and templated.uses_request
        assert seen.hooks.idempotency_header == "idempotency-key" and seen.uses_request
        value = "caf\u00e9 \u00ff-1"  # sent as latin-1 bytes, as HTTP carries them
        headers = [("Idempotency-Key", "ignored"), ("idempotency-key", value.encode("latin-1"))]
        for name in ("by-header", "by-template"):
            first = await client.post(f"/api/1.1/wf/{name}", headers=headers)
            assert first.status_code == 200, first.text
            claim = await storage.idempotency.claim(name, key_of(value), "probe", NOW,
                                                    NOW, NOW + timedelta(days=365))
            assert claim.state == "done", name  # the key of the header's last value
        missing = await client.post("/api/1.1/wf/by-header")
        assert "no idempotency-key header" in missing.json()["body"]["message"]
        answer = await client.post("/api/1.1/wf/by-header-seen", headers=headers)
        assert answer.json()["response"] == {"method": "POST"}  # its steps still see it


def test_a_key_header_named_beyond_ascii_is_left_to_its_template(tmp_path: Path) -> None:
    # No request carries such a header name: the template refuses each request (400), and
    # the gateway still starts.
    from gateway.compiler.webhook_specs import key_header

    assert key_header("{{ request.headers['\u043a\u043b\u044e\u0447'] }}") == ""
    assert key_header("{{ request.headers['x-delivery'] }}") == "x-delivery"
    config = tmp_path / "config"
    config.mkdir()
    (config / "w.yaml").write_text(textwrap.dedent("""\
        kind: api_workflow
        name: odd
        expose: true
        auth: none
        idempotency: {key: "{{ request.headers['\u043a\u043b\u044e\u0447'] }}"}
        steps: [{action: return_data, data: {a: 1}}]
        """), encoding="utf-8")
    create_app(load([config]), None, scheduler=False)


async def test_bad_parameters_are_refused_as_without_idempotency(
        tmp_path: Path, storage_url: str) -> None:
    async with gateway(tmp_path, storage_url) as (client, storage):
        response = await client.post("/api/1.1/wf/hook", json={"id": "evt_1", "fail": "x"})
        assert response.status_code == 400
        assert response.json()["body"]["status"] == "INVALID_DATA"
        assert (await client.post("/api/1.1/wf/hook", json={})).json()["body"]["status"] == \
            "MISSING_DATA"


# --- 1,000 concurrent deliveries of one event -------------------------------------------------

DELIVERIES = 1000


def _tally(responses: list[httpx.Response]) -> dict[int, int]:
    tally: dict[int, int] = {}
    for response in responses:
        tally[response.status_code] = tally.get(response.status_code, 0) + 1
    return tally


async def test_a_thousand_concurrent_deliveries_run_once_on_sqlite(tmp_path: Path) -> None:
    async with gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}") as (client, storage):
        responses = await asyncio.gather(*(
            client.post("/api/1.1/wf/hook", json={"id": "evt_1"}) for _ in range(DELIVERIES)))
        tally = _tally(list(responses))
        assert set(tally) <= {201, 409}, tally
        assert tally.get(201, 0) >= 1
        assert await deliveries(storage) == 1


SERVED = """\
kind: settings
limits: {run_timeout: 60s}
server: {max_connections_per_address: 1000}   # a thousand senders, all from loopback
---
""" + CONFIG


@pytest.mark.postgres
async def test_a_thousand_concurrent_deliveries_run_once_on_two_instances(
        tmp_path: Path, postgres_url: str) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "w.yaml").write_text(textwrap.dedent(SERVED))
    servers: list[Server] = []
    try:
        servers = [start(config, postgres_url, tmp_path / f"server{n}.log") for n in range(2)]
        limits = httpx.Limits(max_connections=DELIVERIES)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            responses = await asyncio.gather(*(
                client.post(f"{servers[n % 2].url}/api/1.1/wf/hook", json={"id": "evt_1"})
                for n in range(DELIVERIES)))
        tally = _tally(list(responses))
        assert set(tally) <= {201, 409}, tally
        replayed = sum(1 for r in responses if r.headers.get("idempotent-replayed"))
        assert tally.get(201, 0) - replayed == 1  # one run answered; the rest replayed or 409
    finally:
        for server in servers:
            stop(server)
    storage = open_storage(postgres_url)
    await storage.open()
    try:
        assert await deliveries(storage) == 1
    finally:
        await storage.close()


@pytest.mark.parametrize(("path", "query", "client"), [
    ("/api/1.1/wf/hook", b"", ("203.0.113.9", 4000)),
    ("/api/1.1/wf/hook", b"a=1&a=2&api_token=secret&b=", None),
    ("/api/1.1/wf/h?o#o\\k", b"x=%20y", ("::1", 1)),
])
def test_request_facts_read_from_the_scope_are_starlettes(
        path: str, query: bytes, client: tuple[str, int] | None) -> None:
    scope = {"type": "http", "method": "POST", "path": path, "query_string": query,
             "root_path": "", "scheme": "http", "server": ("gateway", 80), "client": client,
             "headers": [(b"host", b"gateway"), (b"authorization", b"Bearer tok"),
                         (b"x-delivery", b"d-1"), (b"x-delivery", b"d-2")]}
    request = Request(scope)
    body = b'{"id": "\xc3\xa9"}'
    assert request_facts(request, body) == {
        "method": request.method, "path": request.url.path,
        "headers": {k: v for k, v in request.headers.items()
                    if k != "authorization" or not is_bearer(v)},
        "query": gather((k, v) for k, v in request.query_params.multi_items()
                        if k != "api_token"),
        "body": body.decode(), "client": request.client.host if request.client else None}


def test_a_forked_worker_owns_its_claims_under_a_prefix_of_its_own() -> None:
    # `gateway serve --workers N` forks: two workers counting from 1 under one prefix
    # would take each other's claims for their own.
    import multiprocessing

    from gateway.webhooks import guard

    parent = guard._OWNERS.prefix
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        child = pool.apply(_owner_prefix)
    assert child != parent and guard._OWNERS.prefix == parent


def _owner_prefix() -> str:
    from gateway.webhooks import guard

    return guard._OWNERS.prefix
