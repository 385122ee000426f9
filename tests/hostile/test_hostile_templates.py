"""What a caller cannot make a template do: run on past its budget or the run's deadline,
freeze the server, build a value past the size limits, crash a run with an unclear error, or
forge a line of the server log; and the dates and numbers it cannot slip past the parameter
types."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import Serve

from gateway.storage import Storage, open_storage

SECRET = "s3cr3t-value"
LIMITS = {"max_template_bytes": 100_000, "max_template_items": 20_000,
          "max_template_operations": 20_000, "template_timeout": "60s"}
TEXT = "a b " * 500

# name, template, parameters, what the run log says. Each is over a limit by a margin that
# the code before the limits existed would build without trouble (a megabyte or two, a
# second of work), so that a test that fails, fails quickly.
HOSTILE: list[tuple[str, str, dict[str, Any], str]] = [
    ("center", "{{ 'x' | center(params.n) }}", {"n": 1_000_000}, "max_template_bytes"),
    ("indent", "{{ 'a\nb' | indent(params.n) }}", {"n": 1_000_000}, "max_template_bytes"),
    ("ljust", "{{ 'x'.ljust(params.n) }}", {"n": 1_000_000}, "max_template_bytes"),
    ("rjust", "{{ 'x'.rjust(params.n) }}", {"n": 1_000_000}, "max_template_bytes"),
    ("zfill", "{{ '1'.zfill(params.n) }}", {"n": 1_000_000}, "max_template_bytes"),
    ("percent", "{{ '%*d' % (params.n, 1) }}", {"n": 1_000_000}, "max_template_bytes"),
    ("str-format", "{{ '{:>{}}'.format('', params.n) }}", {"n": 1_000_000},
     "max_template_bytes"),
    ("format-filter", "{{ '%*d' | format(params.n, 1) }}", {"n": 1_000_000},
     "max_template_bytes"),
    ("repeat", "{{ 'ab' * params.n }}", {"n": 1_000_000}, "max_template_bytes"),
    ("join-range", "{{ range(params.n) | join(params.text) }}", {"n": 10_000, "text": TEXT},
     "max_template_bytes"),
    ("range-list", "{{ range(params.n) | list }}", {"n": 50_000}, "max_template_items"),
    ("nested-for", "{% for i in range(params.n) %}{% for j in range(params.n) %}x"
     "{% endfor %}{% endfor %}", {"n": 300}, "max_template_operations"),
    ("wordwrap", "{{ params.text | wordwrap(1, wrapstring='-' * 1000) }}", {"text": TEXT},
     "max_template_bytes"),
    ("replace", "{{ params.text | replace(' ', params.text) }}", {"text": TEXT},
     "max_template_bytes"),
    ("doubling", "{% set ns = namespace(s='ab') %}{% for i in range(params.n) %}"
     "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}", {"n": 20},
     "max_template_bytes"),
    ("nested-lists", "{% set ns = namespace(l=[1]) %}{% for i in range(params.n) %}"
     "{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l | tojson | length }}", {"n": 17},
     "max_template_items"),
    ("lipsum", "{{ lipsum(params.n, false, 90, 100) }}", {"n": 300}, "max_template_bytes"),
    ("date-format", "{{ now | format_date(params.text * 20) }}", {"text": "%c" * 1000},
     "max_template_bytes"),
    ("truncate", "{{ 'hello' | truncate(params.n) }}", {"n": -5},
     "the truncate filter cannot take these arguments"),
    ("days", "{{ now + days(params.n) }}", {"n": 10**9}, "days(1000000000) is out of range"),
    ("minutes", "{{ minutes(params.n * 10**12) }}", {"n": 10**9}, "is out of range"),
    ("parse-date", "{{ parse_date(params.text) }}", {"text": "garbage"},
     "not a date: 'garbage'"),
]


def _workflow(name: str, template: str, steps: list[dict[str, Any]] | None = None,
              params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "api_workflow", "name": name, "expose": True, "auth": "none",
            "params": params or {"n": {"type": "integer", "optional": True},
                                 "text": {"type": "text", "optional": True}},
            "steps": steps or [{"action": "return_data", "data": {"value": template}}]}


def _config(settings: dict[str, Any]) -> str:
    documents: list[dict[str, Any]] = [{"kind": "settings", **settings}]
    documents += [_workflow(name, template) for name, template, _, _ in HOSTILE]
    documents += [
        _workflow("typed", "", params={"when": {"type": "date", "optional": True},
                                       "count": {"type": "integer", "optional": True},
                                       "amount": {"type": "number", "optional": True}},
                  steps=[{"action": "return_data", "data": {"when": "{{ params.when }}"}}]),
        _workflow("shout", "", steps=[
            {"action": "log", "level": "warning", "message": "said: {{ params.text }}"},
            {"action": "return_data", "data": {}}]),
        _workflow("busy", "", steps=[{"action": "set", "values": {
            "v": "{% for i in range(3) %}{{ i }}{% endfor %}"}}]),
    ]
    return yaml.safe_dump_all(documents, sort_keys=False)


@dataclass
class Gateway:
    client: httpx.AsyncClient
    storage: Storage

    async def post(self, name: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post(f"/api/1.1/wf/{name}", json=body)

    async def run_log(self, response: httpx.Response) -> dict[str, Any]:
        await self.storage.runs.flush_runs()
        logged = await self.storage.runs.get_run(response.headers["X-Run-Id"])
        assert logged is not None
        return logged


@contextlib.asynccontextmanager
async def gateway_on(serve: Serve, url: str, **limits: Any) -> AsyncIterator[Gateway]:
    config = _config({"secrets": ["API_KEY"], "limits": {**LIMITS, **limits}})
    async with serve(config, url, environment={"API_KEY": SECRET}) as served:
        yield Gateway(served.client, served.storage)


@pytest.fixture
async def gw(serve: Serve, storage_url: str) -> AsyncIterator[Gateway]:
    async with gateway_on(serve, storage_url) as gateway:
        yield gateway


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert body["body"]["status"] == code
    return str(body["body"]["message"])


@pytest.mark.parametrize(("name", "params", "reason"),
                         [pytest.param(name, params, reason, id=name)
                          for name, _, params, reason in HOSTILE])
async def test_a_template_past_its_limits_fails_the_run_with_the_reason(
        gw: Gateway, name: str, params: dict[str, Any], reason: str) -> None:
    response = await gw.post(name, params)
    _error(response, 500, "ERROR")
    assert response.headers["X-Run-Id"]
    logged = await gw.run_log(response)
    assert logged["status"] == "failed"
    assert reason in logged["error"]["message"]
    assert len(response.content) < 10_000


async def test_no_template_runs_past_the_runs_deadline(serve: Serve, storage_url: str) -> None:
    async with gateway_on(serve, storage_url, run_timeout="0s") as gateway:
        response = await gateway.post("busy", {})
        _error(response, 500, "ERROR")
        logged = await gateway.run_log(response)
    assert "past the run's deadline (limits.run_timeout)" in logged["error"]["message"]


@pytest.mark.parametrize(("params", "name"), [
    ({"when": "123456789"}, "when"),  # nine digits are not epoch milliseconds
    ({"when": "１７００００００００００００"}, "when"),  # nor are full-width digits
    ({"count": "１２３"}, "count"),
    ({"count": "-１２"}, "count"),
    ({"amount": "１.５"}, "amount"),
])
async def test_dates_and_numbers_are_ascii_and_plain(gw: Gateway, params: dict[str, Any],
                                                     name: str) -> None:
    response = await gw.post("typed", params)
    assert f"parameter {name}" in _error(response, 400, "INVALID_DATA")
    assert (await gw.run_log(response))["status"] == "rejected"


async def test_twelve_digits_and_numbers_are_still_epoch_milliseconds(gw: Gateway) -> None:
    answers = [(await gw.post("typed", {"when": when})).json()["response"]
               for when in ("1700000000000", 1700000000000, "2023-11-14T22:13:20Z")]
    assert answers[0] == answers[1] == answers[2]


async def test_a_log_step_writes_one_line_without_secrets(
        gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    forged = f"hi\nERROR:     gateway.run: forged\r\x1b[2J {SECRET} \u2028 done"
    with caplog.at_level(logging.INFO, logger="gateway.run"):
        response = await gw.post("shout", {"text": forged})
    assert response.status_code == 200
    [line] = [r.getMessage() for r in caplog.records if "said:" in r.getMessage()]
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "\u2028" not in line and SECRET not in line
    assert "said: hi\\nERROR:     gateway.run: forged\\r\\x1b[2J [redacted]" in line


# --- The server keeps answering while a template runs -----------------------------------------


ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def server_on(tmp_path: Path) -> Iterator[Callable[[Path, str], Server]]:
    """Starts `gateway serve` on a config folder and a database; kills it at the end."""
    started: list[Server] = []

    def start(config: Path, database: str) -> Server:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        log_path = tmp_path / f"server-{len(started)}.log"
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
                 str(port), "--database", database], cwd=ROOT, stdout=log_file,
                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        server = Server(process, f"http://127.0.0.1:{port}", log_path)
        started.append(server)
        _wait_for(lambda: _healthy(server), 30, "the server to answer /healthz")
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=10)


def _healthy(server: Server) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"the server exited early:\n{server.log()}")
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(server.url + "/healthz", timeout=1).status_code == 200
    return False


SPIN = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        time.sleep(0.02)  # polling a condition, with a deadline that says what it waits for


def test_the_server_answers_while_a_template_runs_to_its_timeout(
        storage_url: str, tmp_path: Path, server_on: Callable[[Path, str], Server]) -> None:
    folder = tmp_path / "workflows.d"
    folder.mkdir()
    settings = {"limits": {"template_timeout": "3s", "max_template_operations": 10**12}}
    steps = [{"action": "log", "level": "warning", "message": "spin started"},
             {"id": "spin", "action": "set", "values": {"v": SPIN}}]
    (folder / "main.yaml").write_text(yaml.safe_dump_all(
        [{"kind": "settings", **settings}, _workflow("spin", "", steps=steps)]))
    server = server_on(folder, storage_url)
    with ThreadPoolExecutor(max_workers=1) as pool:
        spinning = pool.submit(httpx.post, server.url + "/api/1.1/wf/spin", json={},
                               timeout=60)
        _wait_for(lambda: "spin started" in server.log(), 30, "the run to reach its template")
        health = httpx.get(server.url + "/healthz", timeout=10)
        assert health.status_code == 200
        assert not spinning.done(), "/healthz should answer while the template runs"
        response = spinning.result(timeout=60)
    _error(response, 500, "ERROR")
    server.process.send_signal(signal.SIGTERM)  # a clean stop writes what the run log holds
    server.process.wait(timeout=30)
    logged = asyncio.run(_run_in(storage_url, response.headers["X-Run-Id"]))
    assert "the template ran longer than 3 s (limits.template_timeout)" in (
        logged["error"]["message"])


async def _run_in(database: str, run_id: str) -> dict[str, Any]:
    storage = open_storage(database)
    await storage.open()
    try:
        logged = await storage.runs.get_run(run_id)
    finally:
        await storage.close()
    assert logged is not None
    return logged
