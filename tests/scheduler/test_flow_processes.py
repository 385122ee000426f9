"""Flow control across processes, as it is deployed: `gateway serve` processes (each running
the scheduler, as it does by default) and `gateway worker` processes on one database and one
config, jobs scheduled over HTTP, and each job's run calling a real upstream on loopback
that counts, per key, the calls in flight at once: an overlap is seen where it would hurt.

Concurrency keys: 2,000 jobs on 20 keys under `limit: 1`, scheduled by 40 calls spread over
the serve processes, never run two of a key at once, with two serve and two worker
processes on PostgreSQL and one serve process on SQLite; each job runs once, and several
keys are in flight at once (the control: the upstream could see an overlap).

`Fleet` starts, awaits and stops the processes; another scenario of flow control (throttle,
debounce) is another test over it, with workflows of its own in `CONFIG`."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from support import ROOT

from gateway.storage import Job, Storage, open_storage

KEYS = 20
CALLS = 40
PER_CALL = 50
JOBS = CALLS * PER_CALL
# (serve processes, worker processes) per backend: the issue's "two workers and two
# `serve` processes on one PostgreSQL (and one process on SQLite)".
SHAPES = {"postgresql": (2, 2), "sqlite": (1, 0)}
# How a process stopped by SIGTERM ends cleanly: uvicorn re-raises the signal it caught.
CLEAN = {0, -signal.SIGTERM}

CONFIG = f"""
kind: settings
scheduler: {{poll: 200ms, lease: 30s}}
metrics: {{public: true}}
---
kind: api_workflow
name: sync
auth: admin
params:
  n: {{type: integer}}
  url: {{type: text}}
concurrency: {{key: "acct-{{{{ params.n % {KEYS} }}}}", limit: 1}}
steps:
  - action: http_request
    url: "{{{{ params.url }}}}/sync?n={{{{ params.n }}}}"
---
kind: api_workflow
name: plan-sync
auth: none
expose: true
params:
  ns: {{type: integer, list: true}}
  url: {{type: text}}
steps:
  - id: plan
    action: schedule_workflow_on_list
    workflow: sync
    list: "{{{{ params.ns }}}}"
    item_param: n
    params: {{url: "{{{{ params.url }}}}"}}
  - action: return_data
    data: {{scheduled: "{{{{ steps.plan.ids | length }}}}"}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """A `gateway` child process, the file its output goes to, and a serve's URL."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str | None = None

    def output(self, lines: int = 200) -> str:
        """The last `lines` lines it wrote (the file has them all)."""
        tail = self.log.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join([f"--- {self.name} (exit {self.popen.poll()}), the end of {self.log}",
                          *tail])


@dataclass
class Fleet:
    """`gateway serve` and `gateway worker` processes on one database and one config folder:
    `start` them, `ready` waits until every serve answers `/readyz`, `stop` ends them all
    (SIGTERM, then SIGKILL past a deadline). Each process writes its stdout and stderr to a
    file of its own in `logs`; `output()` has them all, for a failure's message."""

    config: Path
    database: str
    logs: Path
    processes: list[Process] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        """The serve processes' base URLs, in the order they were started."""
        return [p.url for p in self.processes if p.url is not None]

    def start(self, serves: int, workers: int) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for index in range(workers):
            self._spawn(f"worker-{index}", ["worker"])
        for index in range(serves):
            port = free_port()
            process = self._spawn(f"serve-{index}", ["serve", "--port", str(port)])
            process.url = f"http://127.0.0.1:{port}"

    def _spawn(self, name: str, argv: list[str]) -> Process:
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "gateway", *argv, "--config", str(self.config),
                 "--database", self.database], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            for url in self.urls:
                while not self._answers(client, url):
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{url}/readyz not 200 within {timeout} s\n"
                                             + self.output())
                    time.sleep(0.05)  # polling a condition, under a deadline saying what

    def _answers(self, client: httpx.Client, url: str) -> bool:
        exited = [p.name for p in self.processes if p.popen.poll() is not None]
        if exited:
            raise AssertionError(f"{', '.join(exited)} exited early\n{self.output()}")
        with contextlib.suppress(httpx.TransportError):
            return client.get(url + "/readyz").status_code == 200
        return False

    def stop(self, timeout: float = 30) -> dict[str, int]:
        """Every process ended: SIGTERM, then SIGKILL for one still running at `timeout`.
        Their exit codes, by name (negative: the signal that ended it)."""
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.popen.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(10)
        return {p.name: p.popen.returncode for p in self.processes}

    def output(self) -> str:
        return "\n".join(process.output() for process in self.processes)


class Upstream:
    """A loopback HTTP server that holds each call `hold` seconds and counts the calls in
    flight at once, per key (`n % KEYS` of the call's `n`: worked out here, not trusted
    from the caller) and overall: the most ever (`peak`, `peak_all`), and each `n`'s calls
    (`calls`)."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.url = ""
        self.lock = threading.Lock()
        self.active: collections.Counter[int] = collections.Counter()
        self.peak: collections.Counter[int] = collections.Counter()
        self.calls: collections.Counter[int] = collections.Counter()
        self.active_all = self.peak_all = 0

    def enter(self, key: int) -> None:
        with self.lock:
            self.active[key] += 1
            self.active_all += 1
            self.peak[key] = max(self.peak[key], self.active[key])
            self.peak_all = max(self.peak_all, self.active_all)

    def leave(self, key: int, n: int) -> None:
        with self.lock:
            self.active[key] -= 1
            self.active_all -= 1
            self.calls[n] += 1

    def ended(self) -> int:
        with self.lock:
            return sum(self.calls.values())

    def handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                n = int(parse_qs(urlsplit(self.path).query)["n"][0])
                upstream.enter(n % KEYS)
                time.sleep(upstream.hold)
                upstream.leave(n % KEYS, n)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        return Handler


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    found = Upstream(hold=0.01)
    server = ThreadingHTTPServer(("127.0.0.1", 0), found.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    found.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows.d"
    folder.mkdir()
    (folder / "wf.yaml").write_text(textwrap.dedent(CONFIG).strip() + "\n")
    return folder


@pytest.fixture
def fleet(config: Path, storage_url: str, tmp_path: Path) -> Iterator[Fleet]:
    started = Fleet(config, storage_url, tmp_path / "logs")
    try:
        yield started
    finally:
        started.stop()
        print(started.output())  # pytest shows it when the test failed


@pytest.fixture
async def store(storage_url: str) -> AsyncIterator[Storage]:
    """The test's own view of the fleet's database."""
    storage = open_storage(storage_url)
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


async def until(what: str, check: Callable[[], Awaitable[bool]], fleet: Fleet,
                timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n"
                             + fleet.output()) from None


async def schedule(urls: list[str], upstream: str) -> None:
    """`JOBS` jobs of `sync`, `PER_CALL` per call of `plan-sync`, the calls made at once and
    dealt round the serve processes."""
    async with httpx.AsyncClient(timeout=60) as client:
        answers = await asyncio.gather(*(
            client.post(f"{urls[call % len(urls)]}/api/1.1/wf/plan-sync", json={
                "ns": list(range(call * PER_CALL, (call + 1) * PER_CALL)), "url": upstream})
            for call in range(CALLS)))
    assert [a.status_code for a in answers] == [200] * CALLS, answers[0].text
    assert sum(int(a.json()["response"]["scheduled"]) for a in answers) == JOBS


async def all_done(store: Storage) -> bool:
    done = await store.jobs.list_jobs(workflow="sync", status="done", limit=JOBS + 1)
    return len(done) >= JOBS


async def ran_by_each(urls: list[str]) -> list[int]:
    """How many jobs the scheduler of each serve process ran (its `/metrics`)."""
    found = []
    async with httpx.AsyncClient(timeout=10) as client:
        for url in urls:
            lines = (await client.get(url + "/metrics")).text.splitlines()
            done = [line for line in lines if line.startswith('gateway_jobs{status="done"}')]
            found.append(int(float(done[0].split()[-1])) if done else 0)
    return found


def backend(storage_url: str) -> str:
    return "sqlite" if storage_url.startswith("sqlite") else "postgresql"


async def test_limit_1_holds_for_2000_jobs_on_20_keys_across_processes(
        fleet: Fleet, store: Storage, storage_url: str, upstream: Upstream) -> None:
    serves, workers = SHAPES[backend(storage_url)]
    fleet.start(serves, workers)
    fleet.ready()
    began = time.monotonic()
    await schedule(fleet.urls, upstream.url)

    async def all_called() -> bool:
        return upstream.ended() >= JOBS

    await until(f"{JOBS} upstream calls", all_called, fleet, timeout=200)
    await until(f"{JOBS} jobs done", lambda: all_done(store), fleet, timeout=30)
    took = time.monotonic() - began
    shares = await ran_by_each(fleet.urls)
    figures = (f"{backend(storage_url)}, {serves} serve + {workers} worker processes: "
               f"{JOBS} jobs scheduled and run in {took:.1f} s ({JOBS / took:.0f} jobs/s), at most "
               f"{upstream.peak_all} calls in flight; run by the serves {shares}, the "
               f"workers {JOBS - sum(shares)}")
    print(figures)
    assert dict(upstream.peak) == dict.fromkeys(range(KEYS), 1), figures
    assert upstream.peak_all > 1, figures  # keys did run together: an overlap would show
    assert sorted(upstream.calls) == list(range(JOBS)), figures
    assert set(upstream.calls.values()) == {1}, figures
    check_jobs(await store.jobs.list_jobs(workflow="sync", limit=JOBS + 1))
    if workers:  # the processes raced for the keys: each serve and the workers ran some
        assert 0 not in shares and sum(shares) < JOBS, figures
    assert set(fleet.stop().values()) <= CLEAN, fleet.output()
    assert not [p.name for p in fleet.processes if "Traceback" in p.log.read_text()], (
        fleet.output())


def check_jobs(jobs: list[Job]) -> None:
    """Every job done at its first claim, under its key (`limit: 1`)."""
    assert len(jobs) == JOBS
    assert {(j.status, j.attempt, j.claims) for j in jobs} == {("done", 1, 1)}
    keys = {j.flow_key: 0 for j in jobs}
    for job in jobs:
        assert (job.flow_key, job.flow_limit) == (
            f"sync:acct-{job.data['params']['n'] % KEYS}", 1)
        keys[job.flow_key] += 1
    assert set(keys.values()) == {JOBS // KEYS}
