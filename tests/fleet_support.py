"""Flow control across processes, as it is deployed (the `test_flow_processes*` modules):
`Fleet` starts `gateway serve` processes (each running the scheduler, as it does by
default) and `gateway worker` processes on one database and one config, waits until they
answer and stops them; `Upstream` is a real server on loopback that each job's run calls,
counting the calls per key and in flight at once, so that what flow control must bound is
seen where it would hurt."""

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
from support import ROOT

from gateway.storage import Storage, open_storage

# (serve processes, worker processes) per backend: the issue's "two workers and two
# `serve` processes on one PostgreSQL (and one process on SQLite)".
SHAPES = {"postgresql": (2, 2), "sqlite": (1, 0)}
# How a process stopped by SIGTERM ends cleanly: uvicorn re-raises the signal it caught.
CLEAN = {0, -signal.SIGTERM}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def backend(storage_url: str) -> str:
    return "sqlite" if storage_url.startswith("sqlite") else "postgresql"


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

    def stopped_cleanly(self) -> None:
        """Stop every process, and check that each ended cleanly, with no traceback."""
        assert set(self.stop().values()) <= CLEAN, self.output()
        assert not [p.name for p in self.processes if "Traceback" in p.log.read_text()], (
            self.output())

    def output(self) -> str:
        return "\n".join(process.output() for process in self.processes)


@contextlib.contextmanager
def fleet_of(config: str, storage_url: str, home: Path) -> Iterator[Fleet]:
    """A `Fleet` (not started yet) serving `config` (one YAML file's text) from `home`;
    stopped at the end, its output printed (pytest shows it when the test failed)."""
    folder = home / "workflows.d"
    folder.mkdir()
    (folder / "wf.yaml").write_text(textwrap.dedent(config).strip() + "\n")
    fleet = Fleet(folder, storage_url, home / "logs")
    try:
        yield fleet
    finally:
        fleet.stop()
        print(fleet.output())


@contextlib.asynccontextmanager
async def opened(storage_url: str) -> AsyncIterator[Storage]:
    """The test's own view of the fleet's database."""
    storage = open_storage(storage_url)
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


class Upstream:
    """A loopback HTTP server that holds each call `hold` seconds (or its `hold` query
    parameter's) and counts the calls in
    flight at once, per key (`n % keys` of the call's `n`: worked out here, not trusted
    from the caller) and overall: the most ever (`peak`, `peak_all`), and each `n`'s calls
    (`calls`)."""

    def __init__(self, hold: float, keys: int) -> None:
        self.hold = hold
        self.keys = keys
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

    def reset(self) -> None:
        """Forget the calls so far (a warm-up's)."""
        with self.lock:
            self.calls.clear()
            self.peak.clear()
            self.peak_all = 0

    def handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                n = int(query["n"][0])
                upstream.enter(n % upstream.keys)
                time.sleep(float(query.get("hold", [upstream.hold])[0]))
                upstream.leave(n % upstream.keys, n)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        return Handler


@contextlib.contextmanager
def upstream_on_loopback(hold: float, keys: int) -> Iterator[Upstream]:
    """An `Upstream` serving on loopback (its `url`) until the end of the block."""
    found = Upstream(hold, keys)
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


async def until(what: str, check: Callable[[], Awaitable[bool]], fleet: Fleet,
                timeout: float) -> None:
    """Wait until `check()` is true, at most `timeout` seconds (then fail, saying `what`
    was waited for, with the fleet's output)."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n"
                             + fleet.output()) from None
