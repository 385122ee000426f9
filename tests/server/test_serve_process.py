"""`python -m gateway serve` as a real process: start, answer, stop on SIGTERM; and a kill -9
under concurrent write load loses no record whose creation was acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest

from gateway.storage import open_storage

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
kind: data_type
name: item
fields:
  n: {type: integer}
  worker: {type: integer, indexed: true}
---
kind: api_workflow
name: add
expose: true
auth: none
params: {n: {type: integer}, worker: {type: integer}}
steps:
  - id: item
    action: create_thing
    type: item
    fields: {n: "{{ params.n }}", worker: "{{ params.worker }}"}
  - action: return_data
    data: {id: "{{ steps.item._id }}", n: "{{ steps.item.n }}"}
---
kind: api_workflow
name: get
expose: true
auth: none
method: GET
params: {id: {type: text}}
steps:
  - id: found
    action: get_thing
    type: item
    thing: "{{ params.id }}"
  - action: return_data
    data: {found: "{{ steps.found }}"}
---
kind: api_workflow
name: count
expose: true
auth: none
method: GET
steps:
  - id: all
    action: search
    type: item
    limit: 1
  - action: return_data
    data: {count: "{{ steps.all.count }}"}
---
kind: api_workflow
name: hello
expose: true
auth: none
method: GET
params: {name: {type: text}}
steps:
  - action: return_data
    data: {greeting: "hello {{ params.name }}"}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A `gateway serve` child process and where it logs."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log_file: IO[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text(errors="replace")


def start(config: Path, database: str, log_path: Path) -> Server:
    port = free_port()
    log_file = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port),
         "--database", database],
        cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = Server(process, port, log_path, log_file)
    wait_until_ready(server)
    return server


def wait_until_ready(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise AssertionError(f"the server exited with {server.process.returncode} "
                                     f"before answering /healthz:\n{server.log()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(server.url + "/healthz").status_code == 200:
                    return
            time.sleep(0.05)  # polling a condition, with a deadline that says what it waits for
    raise AssertionError(f"/healthz did not answer within {timeout} s:\n{server.log()}")


def stop(server: Server, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
    if server.process.poll() is None:
        server.process.send_signal(sig)
    try:
        return server.process.wait(timeout=timeout)
    finally:
        server.log_file.close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows.d"
    folder.mkdir()
    (folder / "main.yaml").write_text(textwrap.dedent(CONFIG).strip())
    return folder


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Every server a test starts is stopped (killed if need be) when it ends."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=10)
        if not server.log_file.closed:
            server.log_file.close()


def test_serve_starts_answers_and_stops_on_sigterm(config: Path, tmp_path: Path,
                                                   servers: list[Server]) -> None:
    server = start(config, f"sqlite:///{tmp_path / 'g.db'}", tmp_path / "server.log")
    servers.append(server)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        hello = client.get("/api/1.1/wf/hello", params={"name": "Ada"})
        assert hello.status_code == 200
        assert hello.json() == {"status": "success", "response": {"greeting": "hello Ada"}}
        assert hello.headers["X-Run-Id"]
        added = client.post("/api/1.1/wf/add", json={"n": 1, "worker": 0})
        assert added.status_code == 200, added.text
        assert client.get("/api/1.1/wf/nope").status_code == 404
        assert client.get("/readyz").status_code == 200
    # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM.
    assert stop(server) in (0, -signal.SIGTERM), server.log()
    log = server.log()
    assert "Application shutdown complete" in log
    assert "Traceback" not in log and "ERROR" not in log
    # A clean shutdown writes the run log out: every run above is in the file.
    runs = asyncio.run(_runs_in(f"sqlite:///{tmp_path / 'g.db'}"))
    assert sorted(runs) == ["add", "hello"]


async def _runs_in(database: str) -> list[str]:
    storage = open_storage(database)
    await storage.open()
    try:
        return [str(run["workflow"]) for run in await storage.runs.list_runs()]
    finally:
        await storage.close()


@dataclass
class Load:
    acknowledged: dict[str, int] = field(default_factory=dict)
    failures: int = 0


async def _write_until_killed(server: Server, load: Load, workers: int, kill_after: int) -> None:
    """`workers` concurrent writers; kill -9 the server once `kill_after` writes are
    acknowledged, with requests still in flight; writers stop at the first refused connection."""
    killed = asyncio.Event()
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)

    async def writer(client: httpx.AsyncClient, worker: int) -> None:
        n = 0
        while True:
            n += 1
            try:
                response = await client.post("/api/1.1/wf/add", json={"n": n, "worker": worker})
            except httpx.TransportError:
                load.failures += 1
                if killed.is_set():
                    return
                continue
            assert response.status_code == 200, response.text
            body = response.json()["response"]
            load.acknowledged[body["id"]] = body["n"]
            if len(load.acknowledged) >= kill_after and not killed.is_set():
                killed.set()
                os.kill(server.process.pid, signal.SIGKILL)

    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
        await asyncio.wait_for(asyncio.gather(*(writer(client, w) for w in range(workers))),
                               timeout=120)


async def _check_present(server: Server, load: Load) -> int:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        count = (await client.get("/api/1.1/wf/count")).json()["response"]["count"]
        semaphore = asyncio.Semaphore(16)

        async def check(record_id: str, n: int) -> None:
            async with semaphore:
                response = await client.get("/api/1.1/wf/get", params={"id": record_id})
            found = response.json()["response"]["found"]
            assert found is not None, f"acknowledged record {record_id} is lost"
            assert found["n"] == n

        await asyncio.gather(*(check(i, n) for i, n in load.acknowledged.items()))
    return int(count)


async def _check_with_storage(database: str, load: Load) -> None:
    storage = open_storage(database)
    await storage.open()
    try:
        for record_id, n in load.acknowledged.items():
            record = await storage.records.get("item", record_id)
            assert record is not None and record["n"] == n, record_id
    finally:
        await storage.close()


def test_kill_9_under_write_load_loses_no_acknowledged_record(
        config: Path, tmp_path: Path, servers: list[Server]) -> None:
    database = f"sqlite:///{tmp_path / 'crash.db'}"
    server = start(config, database, tmp_path / "first.log")
    servers.append(server)
    load = Load()
    asyncio.run(_write_until_killed(server, load, workers=32, kill_after=400))
    assert server.process.wait(timeout=10) == -signal.SIGKILL
    server.log_file.close()
    assert len(load.acknowledged) >= 400
    # Requests were in flight when the process died: some were never answered.
    assert load.failures >= 1

    # The file as the killed process left it, read with the storage API (WAL recovery).
    asyncio.run(_check_with_storage(database, load))

    restarted = start(config, database, tmp_path / "second.log")
    servers.append(restarted)
    count = asyncio.run(_check_present(restarted, load))
    # Unacknowledged writes may or may not have landed; acknowledged ones all did.
    assert count >= len(load.acknowledged)
    assert count <= len(load.acknowledged) + 32
    assert stop(restarted) in (0, -signal.SIGTERM), restarted.log()
