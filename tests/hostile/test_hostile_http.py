"""Hostile input at the HTTP edge: what a caller sends cannot bloat a response or a page, put
bytes HTTP cannot carry in a header, hold a connection with slow or huge headers or a slow
body, turn a big integer into a float, or make the server redirect or echo at will; and a
config cannot expand YAML aliases without end or serve SQLite from several workers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import served

from gateway.cli import main
from gateway.compiler.loader import check
from gateway.config.source import load_text
from gateway.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
kind: settings
secrets: [API_KEY]
limits: {max_response_bytes: 2000, max_page_bytes: 3000, max_list_ids: 1000}
---
kind: data_type
name: item
fields:
  name: {type: text}
---
kind: api_workflow
name: echo
expose: true
auth: none
params:
  name: {type: text}
  times: {type: integer, optional: true, default: 1}
steps:
  - action: return_data
    data: {name: "{{ params.name * params.times }}"}
---
kind: api_workflow
name: header
expose: true
auth: none
params: {value: {type: text}}
steps:
  - action: return_data
    data: {}
    headers: {x-echo: "{{ params.value }}"}
---
kind: api_workflow
name: typed
expose: true
auth: none
params: {value: {type: text}}
steps:
  - action: return_data
    text: "typed"
    content_type: "{{ params.value ~ ('\\x00' if params.value == 'nul' else '') }}"
---
kind: api_workflow
name: nul-header
expose: true
auth: none
params: {value: {type: text}}
steps:
  - action: return_data
    data: {}
    headers: {X-Echo: "{{ params.value ~ '\\x00' }}"}
---
kind: api_workflow
name: status
expose: true
auth: none
params: {code: {type: integer}}
steps:
  - action: return_data
    data: {}
    status: "{{ params.code }}"
---
kind: api_workflow
name: add
expose: true
auth: none
params: {name: {type: text}}
steps:
  - id: item
    action: create_thing
    type: item
    fields: {name: "{{ params.name }}"}
  - action: return_data
    data: {id: "{{ steps.item._id }}"}
---
kind: api_workflow
name: page
expose: true
auth: none
method: GET
params: {cursor: {type: text, optional: true}}
steps:
  - id: found
    action: search
    type: item
    limit: 10
    cursor: "{{ params.cursor }}"
  - action: return_data
    data:
      ids: "{{ steps.found.results | map(attribute='_id') | list }}"
      count: "{{ steps.found.count }}"
      remaining: "{{ steps.found.remaining }}"
      cursor: "{{ steps.found.cursor }}"
---
kind: api_workflow
name: query
expose: true
auth: none
method: GET
steps:
  - action: return_data
    data: {tag: "{{ request.query.tag }}"}
---
kind: api_workflow
name: items
expose: true
auth: none
params: {things: {type: item, list: true}}
steps:
  - action: return_data
    data: {n: "{{ params.things | length }}"}
"""


def write_config(folder: Path, text: str = CONFIG, **replace: str) -> Path:
    body = textwrap.dedent(text)
    for old, new in replace.items():
        body = body.replace(old, new)
    path = folder / "wf.yaml"
    path.write_text(body)
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@contextlib.asynccontextmanager
async def client_for(config: Path, url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    async with served(config, url, environment={"API_KEY": "k"}) as gateway:
        yield gateway.client, gateway.storage


async def run_of(storage: Any, response: httpx.Response) -> dict[str, Any]:
    await storage.runs.flush_runs()
    found = await storage.runs.get_run(response.headers["x-run-id"])
    assert found is not None
    return dict(found)


# --- Item 4: bounded responses and pages ------------------------------------------------------


async def test_a_response_over_max_response_bytes_is_a_clear_error_recorded_as_failed(
        config: Path, storage_url: str) -> None:
    async with client_for(config, storage_url) as (client, storage):
        small = await client.post("/api/1.1/wf/echo", json={"name": "ab", "times": 10})
        large = await client.post("/api/1.1/wf/echo", json={"name": "ab", "times": 5000})
        run = await run_of(storage, large)
    assert small.status_code == 200
    body = large.json()["body"]
    assert (large.status_code, body["status"]) == (500, "RESPONSE_TOO_LARGE")
    assert "2000 bytes" in body["message"] and body["run_id"] == large.headers["x-run-id"]
    assert run["status"] == "failed" and run["error"]["code"] == "RESPONSE_TOO_LARGE"


async def test_a_search_page_stops_at_max_page_bytes_and_the_cursor_reaches_the_rest(
        config: Path, storage_url: str) -> None:
    async with client_for(config, storage_url) as (client, _):
        for n in range(5):
            added = await client.post("/api/1.1/wf/add", json={"name": f"{n}" * 1000})
            assert added.status_code == 200
        seen: list[str] = []
        pages = []
        cursor = None
        while True:
            response = await client.get("/api/1.1/wf/page",
                                        params={"cursor": cursor} if cursor else {})
            page = response.json()["response"]
            pages.append(len(page["ids"]))
            seen.extend(page["ids"])
            assert page["count"] == 5 and page["remaining"] == 5 - len(seen)
            cursor = page["cursor"]
            if cursor is None:
                break
    assert pages == [2, 2, 1]  # about 1.1 KB a record, 3000 bytes a page
    assert len(set(seen)) == 5


# --- Item 5: caller data in response headers --------------------------------------------------


@pytest.mark.parametrize("value", ["5 €", "a\r\nSet-Cookie: evil=1", "a\nb", "del\x7f"])
async def test_a_header_value_http_cannot_carry_fails_the_run_with_its_reason_and_run_id(
        config: Path, storage_url: str, value: str) -> None:
    async with client_for(config, storage_url) as (client, storage):
        response = await client.post("/api/1.1/wf/header", json={"value": value})
        run = await run_of(storage, response)
    assert response.status_code == 500
    assert response.json()["body"]["run_id"] == response.headers["x-run-id"]
    assert "evil" not in response.headers.get("set-cookie", "")
    assert run["status"] == "failed" and "header" in run["error"]["message"]


async def test_a_nul_in_a_header_value_fails_the_run(config: Path, storage_url: str) -> None:
    # (A NUL the caller sends is kept out of the parameters: PostgreSQL text cannot hold it.)
    async with client_for(config, storage_url) as (client, storage):
        response = await client.post("/api/1.1/wf/nul-header", json={"value": "v"})
        run = await run_of(storage, response)
    assert response.status_code == 500 and run["status"] == "failed"
    assert "\\x00" in run["error"]["message"]


@pytest.mark.parametrize("value", ["nul", "text/plain\r\nSet-Cookie: evil=1", "text/€"])
async def test_a_content_type_http_cannot_carry_fails_the_run_with_its_reason(
        config: Path, storage_url: str, value: str) -> None:
    async with client_for(config, storage_url) as (client, storage):
        response = await client.post("/api/1.1/wf/typed", json={"value": value})
        run = await run_of(storage, response)
        fine = await client.post("/api/1.1/wf/typed", json={"value": "text/csv"})
    assert response.status_code == 500
    assert response.json()["body"]["run_id"] == response.headers["x-run-id"]
    assert "evil" not in response.headers.get("set-cookie", "")
    assert run["status"] == "failed" and "content_type" in run["error"]["message"]
    assert (fine.status_code, fine.text) == (200, "typed")
    assert fine.headers["content-type"].startswith("text/csv")


@pytest.mark.parametrize("name", ["bad name", "x-\u00e9", "a:b"])
def test_an_invalid_header_name_is_refused_at_validate_time(tmp_path: Path, name: str) -> None:
    config = write_config(tmp_path, CONFIG, **{"headers: {x-echo:": f"headers: {{'{name}':"})
    _, problems = check([config], codegen=False)
    assert [(p.code, p.pointer) for p in problems] == [
        ("schema.pattern", f"/steps/0/headers/{name}")]


async def test_a_header_value_is_checked_once_rendered_and_latin_1_passes(
        config: Path, storage_url: str) -> None:
    async with client_for(config, storage_url) as (client, storage):
        latin = await client.post("/api/1.1/wf/header", json={"value": "caf\u00e9\tok"})
        euro = await client.post("/api/1.1/wf/header", json={"value": "\u20ac"})
        run = await run_of(storage, euro)
    assert latin.status_code == 200
    assert latin.headers["x-echo"].encode("latin-1") == "caf\u00e9\tok".encode("latin-1")
    assert (euro.status_code, run["status"]) == (500, "failed")


# --- Item 8: slow or huge requests, disconnects (a real server) -------------------------------


SERVER_CONFIG = """
kind: settings
server: {max_header_bytes: 4096, header_timeout: 1s, body_timeout: 1s, first_byte_timeout: 1s}
---
kind: api_workflow
name: hello
expose: true
auth: none
params: {name: {type: text}}
steps:
  - action: return_data
    data: {greeting: "hello {{ params.name }}"}
---
kind: api_workflow
name: ping
expose: true
auth: none
method: GET
steps:
  - action: return_data
    data: {pong: true}
---
kind: api_workflow
name: nothing
expose: true
auth: none
method: GET
steps:
  - action: return_data
    status: 204
    data: {ignored: "a 204 has no body"}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path, storage_url: str) -> Iterator[tuple[int, Path]]:
    """`gateway serve` as a process, with small header and body bounds; its port and log."""
    config = write_config(tmp_path, SERVER_CONFIG)
    port, log_path = free_port(), tmp_path / "server.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
             str(port), "--database", storage_url],
            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_for_health(port, process, log_path)
            yield port, log_path
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def wait_for_health(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the server exited:\n{log_path.read_text()}"
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    return
            time.sleep(0.05)  # polling a condition, with a deadline that says what it waits for
    raise AssertionError(f"/healthz did not answer within 30 s:\n{log_path.read_text()}")


def exchange(port: int, data: bytes, *, close: bool = False) -> bytes:
    """Send `data` and read until the server closes (at most 20 s); or just close."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        if close:
            return b""
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


def wait_for_line(log_path: Path, text: str) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        log = log_path.read_text(errors="replace")
        if text in log:
            return log
        time.sleep(0.05)  # polling the log, with a deadline that says what it waits for
    raise AssertionError(f"the server log never said {text!r}:\n{log_path.read_text()}")


POST = (b"POST /api/1.1/wf/hello HTTP/1.1\r\nHost: gw\r\ncontent-type: application/json\r\n")


def test_huge_headers_are_refused_with_431_and_the_connection_closed(
        server: tuple[int, Path]) -> None:
    port, _ = server
    for request in (POST + b"x-big: " + b"a" * 8000 + b"\r\ncontent-length: 2\r\n\r\n{}",
                    POST + b"x-big: " + b"a" * 1_000_000):  # never ends: refused as it comes
        answer = exchange(port, request)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b'"HEADERS_TOO_LARGE"' in answer


def test_headers_under_the_bound_pass_whatever_body_comes_in_the_same_read(
        server: tuple[int, Path]) -> None:
    port, _ = server
    body = b'{"name": "' + b"a" * 6000 + b'"}'  # the read passes 4,096 bytes; the headers do not
    answer = exchange(port, POST + b"x-pad: " + b"p" * 3000 + b"\r\ncontent-length: %d\r\n"
                      b"connection: close\r\n\r\n%s" % (len(body), body))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def test_slow_headers_and_a_slow_body_get_408(server: tuple[int, Path]) -> None:
    port, _ = server
    slow_headers = exchange(port, b"POST /api/1.1/wf/hello HTTP/1.1\r\nHost: gw\r\n")
    assert slow_headers.startswith(b"HTTP/1.1 408 "), slow_headers[:200]
    silent = exchange(port, b"")
    assert silent.startswith(b"HTTP/1.1 408 "), silent[:200]
    slow_body = exchange(port, POST + b"content-length: 40\r\n\r\n{\"name\": ")
    assert slow_body.startswith(b"HTTP/1.1 408 "), slow_body[:200]
    assert b'"REQUEST_TIMEOUT"' in slow_body and b"body_timeout" in slow_body
    done = exchange(port, POST + b"content-length: 15\r\nconnection: close\r\n\r\n"
                    b'{"name": "Ada"}')
    assert done.startswith(b"HTTP/1.1 200 "), done[:200]


def test_a_client_gone_mid_body_is_one_quiet_line(server: tuple[int, Path]) -> None:
    port, log_path = server
    exchange(port, POST + b"content-length: 400\r\n\r\n{\"name\": ", close=True)
    log = wait_for_line(log_path, "closed the connection before sending the whole body")
    assert "Traceback" not in log and "ERROR" not in log


# --- Keep-alive, pipelining, 100 Continue and HEAD on the gateway's own server --------------


def read_response(sock: socket.socket, pending: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One response (head, body) read off `sock` by its content-length; and what followed."""
    data = pending
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or pytest.fail(f"the connection closed after {data!r}")
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(rest) < length:
        rest += sock.recv(65536) or pytest.fail("the connection closed mid-body")
    return head, rest[:length], rest[length:]


def test_pipelined_requests_each_get_a_whole_response(server: tuple[int, Path]) -> None:
    port, _ = server
    body = b'{"name": "Ada"}'
    one = POST + b"content-length: %d\r\n\r\n%s" % (len(body), body)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(one + one + b"GET /api/1.1/wf/ping HTTP/1.1\r\nHost: gw\r\n\r\n")
        rest = b""
        for expected in (b'"hello Ada"', b'"hello Ada"', b'"pong":true'):
            head, answer, rest = read_response(sock, rest)
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert expected in answer, answer
        assert rest == b""


def test_a_204_sends_no_body_and_the_connection_goes_on(server: tuple[int, Path]) -> None:
    """A body after a 204 would be read as the start of the connection's next answer."""
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET /api/1.1/wf/nothing HTTP/1.1\r\nHost: gw\r\n\r\n"
                     b"GET /api/1.1/wf/ping HTTP/1.1\r\nHost: gw\r\n\r\n")
        data = b""
        while data.count(b"\r\n\r\n") < 2:
            data += sock.recv(65536) or pytest.fail(f"the connection closed after {data!r}")
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 204 "), head
        assert b"content-length" not in head.lower()
        head, answer, _ = read_response(sock, rest)
        assert head.startswith(b"HTTP/1.1 200 ") and b'"pong":true' in answer, rest


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding", "Connection",
                                  "content-type"])
def test_a_header_the_gateway_writes_itself_is_refused_at_validate_time(
        tmp_path: Path, name: str) -> None:
    (tmp_path / "w.yaml").write_text(
        "kind: api_workflow\nname: w\nauth: none\nsteps:\n  - action: return_data\n"
        f"    data: {{}}\n    headers: {{{name}: '999'}}\n")
    _, problems = check([tmp_path])
    assert [(p.code, p.pointer) for p in problems] == [
        ("value.gateway-header", f"/steps/0/headers/{name}")]


def test_expect_100_continue_is_answered_before_the_body_is_sent(
        server: tuple[int, Path]) -> None:
    port, _ = server
    body = b'{"name": "Ada"}'
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(POST + b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(body))
        interim = b""
        while b"\r\n\r\n" not in interim:  # the server asks for the body before it has it
            interim += sock.recv(65536) or pytest.fail("the connection closed")
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        head, rest = interim.split(b"\r\n\r\n", 1)
        sock.sendall(body)
        head, answer, _ = read_response(sock, rest)
        assert head.startswith(b"HTTP/1.1 200 ") and b'"hello Ada"' in answer


def test_head_of_a_get_workflow_has_headers_and_no_body(server: tuple[int, Path]) -> None:
    port, _ = server
    answer = exchange(port, b"HEAD /api/1.1/wf/ping HTTP/1.1\r\nHost: gw\r\n"
                            b"connection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"x-run-id:" in head.lower()
    assert body == b""


# --- Item 10: several workers on SQLite -------------------------------------------------------


def test_serve_refuses_several_workers_on_sqlite_naming_postgresql(tmp_path: Path) -> None:
    config = write_config(tmp_path, SERVER_CONFIG)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
         str(free_port()), "--workers", "2", "--database", f"sqlite:///{tmp_path / 'g.db'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "PostgreSQL" in done.stderr and "Traceback" not in done.stderr


# --- Item 11: empty secrets, empty text -------------------------------------------------------


def test_an_empty_secret_is_missing(config: Path, tmp_path: Path) -> None:
    assert Settings(secret_names=("API_KEY",), secrets={"API_KEY": ""}).missing_secrets() == [
        "API_KEY"]
    result = CliRunner().invoke(
        main, ["run", "echo", "-p", "name=x", "--config", str(config), "--database",
               f"sqlite:///{tmp_path / 'g.db'}"], env={"API_KEY": ""})
    assert result.exit_code == 1
    assert "API_KEY" in result.output


async def test_an_empty_text_for_a_required_text_parameter_is_missing(
        config: Path, storage_url: str) -> None:
    async with client_for(config, storage_url) as (client, storage):
        response = await client.post("/api/1.1/wf/echo", json={"name": ""})
        run = await run_of(storage, response)
    assert (response.status_code, response.json()["body"]["status"]) == (400, "MISSING_DATA")
    assert run["status"] == "rejected"


# --- Item 15: YAML alias bombs ----------------------------------------------------------------


def bomb(levels: int) -> str:
    lines = ["kind: api_workflow", "name: laughs", "auth: none",
             "x0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join([*lines, "steps: [{action: terminate}]"]) + "\n"


@pytest.mark.parametrize("levels", [6, 9])
def test_alias_expansion_past_the_limit_is_a_located_diagnostic(levels: int) -> None:
    documents, problems, _ = load_text(bomb(levels), "bomb.yaml")
    assert documents == []
    assert [(p.code, p.line) for p in problems] == [("yaml.alias-limit", 8)]  # x4: 9**5 nodes


def test_a_recursive_alias_is_a_diagnostic() -> None:
    _, problems, _ = load_text("kind: api_workflow\nsteps: &s\n  - extra: *s\n", "loop.yaml")
    assert [p.code for p in problems] == ["yaml.alias-limit"]


# --- Item 17: big integers, the bare prefix, echoed names, 1xx, repeated query keys, ids -----


async def test_a_100_digit_integer_sent_to_a_text_parameter_stays_exact(
        config: Path, storage_url: str) -> None:
    digits = "1" + "0" * 99
    async with client_for(config, storage_url) as (client, _):
        exact = await client.post("/api/1.1/wf/echo", content=f'{{"name": {digits}}}',
                                  headers={"content-type": "application/json"})
        huge = await client.post("/api/1.1/wf/echo", content=f'{{"name": 1{"0" * 5000}}}',
                                 headers={"content-type": "application/json"})
    assert exact.json() == {"status": "success", "response": {"name": digits}}
    assert (huge.status_code, huge.json()["body"]["status"]) == (400, "INVALID_BODY")


async def test_json_nested_past_what_the_standard_library_reads_is_a_400(
        config: Path, storage_url: str) -> None:
    """A long integer sends the body to the standard library's reader, whose nesting limit
    is lower than orjson's: still the body's fault (400), not the server's."""
    deep = "[" * 1000 + "12345678901234567890" + "]" * 1000
    async with client_for(config, storage_url) as (client, _):
        answer = await client.post("/api/1.1/wf/echo", content=f'{{"name": {deep}}}',
                                   headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()["body"]["status"]) == (400, "INVALID_BODY")
    assert "nested too deeply" in answer.json()["body"]["message"]


@pytest.mark.parametrize("path", ["/api/1.1/wf", "/healthz/"])
async def test_no_redirect_follows_the_host_header(config: Path, storage_url: str,
                                                  path: str) -> None:
    async with client_for(config, storage_url) as (client, _):
        response = await client.get(path, headers={"host": "evil.example"})
    assert response.status_code == 404 and "location" not in response.headers
    assert response.json()["body"]["status"] == "NOT_FOUND"


async def test_a_404_echoes_a_long_name_cut_short_and_escaped(
        config: Path, storage_url: str) -> None:
    async with client_for(config, storage_url) as (client, _):
        response = await client.get("/api/1.1/wf/" + "%1b[31m" + "n" * 60_000)
    message = response.json()["body"]["message"]
    assert response.status_code == 404
    assert len(message) < 200 and "\x1b" not in message and "\\x1b" in message


async def test_a_1xx_status_is_refused_at_run_time_and_at_validate_time(
        config: Path, storage_url: str, tmp_path: Path) -> None:
    async with client_for(config, storage_url) as (client, storage):
        response = await client.post("/api/1.1/wf/status", json={"code": 101})
        run = await run_of(storage, response)
    assert response.status_code == 500 and run["status"] == "failed"
    assert "200-599" in run["error"]["message"]
    constant = write_config(tmp_path, CONFIG, **{'status: "{{ params.code }}"': "status: 101"})
    _, problems = check([constant], codegen=False)
    assert [(p.code, p.pointer) for p in problems] == [
        ("schema.minimum", "/steps/0/status")]


async def test_repeated_query_keys_reach_request_query_as_a_list(
        config: Path, storage_url: str) -> None:
    async with client_for(config, storage_url) as (client, _):
        many = await client.get("/api/1.1/wf/query?tag=a&tag=b")
        one = await client.get("/api/1.1/wf/query?tag=a")
    assert many.json()["response"] == {"tag": ["a", "b"]}
    assert one.json()["response"] == {"tag": "a"}


async def test_a_list_parameter_carries_at_most_max_list_ids_ids(
        config: Path, storage_url: str) -> None:
    async with client_for(config, storage_url) as (client, storage):
        response = await client.post("/api/1.1/wf/items",
                                     json={"things": [f"id{n}" for n in range(1001)]})
        run = await run_of(storage, response)
    assert (response.status_code, response.json()["body"]["status"]) == (400, "INVALID_DATA")
    assert "max_list_ids" in response.json()["body"]["message"]
    assert run["status"] == "rejected"


async def test_loading_record_parameters_runs_inside_run_timeout(
        tmp_path: Path, storage_url: str) -> None:
    config = write_config(tmp_path, CONFIG, **{"max_list_ids: 1000}":
                                               "max_list_ids: 1000, run_timeout: 1ms}"})
    async with client_for(config, storage_url) as (client, storage):
        ids = [(await storage.records.create("item", {"name": str(n)})).record["_id"]
               for n in range(1000)]
        response = await client.post("/api/1.1/wf/items", json={"things": ids})
        run = await run_of(storage, response)
    assert response.status_code == 500
    assert run["status"] == "failed" and "longer than" in run["error"]["message"]
