"""`http_request` against a real HTTP server on loopback and `send_email` to a real SMTP
server (aiosmtpd) on loopback, on both backends: results, retries, refusals, redaction."""

from __future__ import annotations

import contextlib
import json
import socket
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from click.testing import CliRunner
from conftest import served

from gateway.cli import main
from gateway.compiler.loader import check
from gateway.runtime.http_client import is_public
from gateway.storage import Storage

TOKEN = "tok-7f3a9c1e5b2d"


class Upstream:
    """A real HTTP server on loopback: what it was sent, and a script of answers by path."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.failures: dict[str, int] = {}
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.answer()

            def do_POST(self) -> None:
                self.answer()

            def answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode()
                upstream.received.append({"method": self.command, "path": self.path,
                                          "headers": dict(self.headers), "body": body})
                path = self.path.split("?")[0]
                path = next((p for p in upstream.failures if path.startswith(p)), path)
                left = upstream.failures.get(path, 0)
                if left:
                    upstream.failures[path] = left - 1
                    status = 429 if path == "/limited" else 503
                    self.send(status, b"{}", {"Retry-After": "0"} if status == 429 else {})
                elif path == "/big":
                    self.send(200, b"x" * 5000)
                elif path.startswith("/status/"):
                    self.send(int(path.rsplit("/", 1)[1]), b"{}")
                else:
                    self.send(200, json.dumps({"path": self.path, "body": body}).encode(),
                              {"Content-Type": "application/json", "X-Upstream": "yes"})

            def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Upstream:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


class Inbox:
    """An aiosmtpd handler keeping every message delivered to it."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, EmailMessage]] = []

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if address.endswith("@refused.example.com"):
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        self.messages.append((envelope, message_from_bytes(content, policy=policy.default)))
        return "250 Message accepted for delivery"


def authenticate(server: Any, session: Session, envelope: Envelope, mechanism: str,
                 data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"ops" and \
        data.password == TOKEN.encode()
    return AuthResult(success=ok)


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with socket.socket() as probe:  # aiosmtpd checks it is up by connecting to its port
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=authenticate,
                            auth_require_tls=False)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, database: str, *documents: str, settings: str = "",
                  secrets: dict[str, str] | None = None,
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, Storage]]:
    secrets = {"API_TOKEN": TOKEN} if secrets is None else secrets
    head = f"kind: settings\nsecrets: [{', '.join(secrets)}]\n" + settings
    config = "\n---\n".join([head, *(textwrap.dedent(doc).strip() for doc in documents)])
    async with served(config, database, home=tmp_path, environment=secrets) as served_app:
        yield served_app.client, served_app.storage


def calling(step: str, params: str = "{url: {type: text}}") -> str:
    step = textwrap.dedent(step).strip()
    if step.startswith("{"):  # a flow mapping: as a block, so that the id goes beside it
        step = yaml.safe_dump(yaml.safe_load(step), sort_keys=False, width=1000).strip()
    return f"""\
kind: api_workflow
name: call
expose: true
auth: none
params: {params}
steps:
  - id: called
{textwrap.indent(textwrap.dedent(step).strip(), "    ")}
  - action: return_data
    data: {{result: "{{{{ steps.called }}}}"}}
"""


async def run_log(storage: Storage, response: httpx.Response) -> str:
    await storage.runs.flush_runs()
    return json.dumps(await storage.runs.get_run(response.headers["x-run-id"]), default=str)


# --- http_request -----------------------------------------------------------------------------


async def test_a_request_and_its_result(tmp_path: Path, storage_url: str,
                                        upstream: Upstream) -> None:
    step = """\
action: http_request
method: POST
url: "{{ params.url }}/echo"
headers: {X-Api-Key: "{{ secrets.API_TOKEN }}"}
query: {page: 2}
json: {name: ada, n: 1}
"""
    async with gateway(tmp_path, storage_url, calling(step)) as (client, storage):
        response = await client.post("/api/1.1/wf/call", json={"url": upstream.url})
        assert response.status_code == 200, response.text
        result = response.json()["response"]["result"]
        assert result["status"] == 200
        assert result["json"] == {"path": "/echo?page=2", "body": '{"name": "ada", "n": 1}'}
        assert result["headers"]["x-upstream"] == "yes"
        assert json.loads(result["text"]) == result["json"]
        sent = upstream.received[0]
        assert sent["headers"]["X-Api-Key"] == TOKEN
        assert sent["headers"]["Content-Type"] == "application/json"
        assert TOKEN not in await run_log(storage, response)


async def test_a_form_body_and_a_raw_body(tmp_path: Path, upstream: Upstream) -> None:
    form = calling("{action: http_request, method: POST, url: '{{ params.url }}/f', "
                   "form: {a: 'b c'}}")
    async with gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", form) as (client, _):
        await client.post("/api/1.1/wf/call", json={"url": upstream.url})
    assert upstream.received[0]["body"] == "a=b+c"
    assert upstream.received[0]["headers"]["Content-Type"] == "application/x-www-form-urlencoded"


async def test_retries_on_5xx_and_on_429_with_retry_after(tmp_path: Path, storage_url: str,
                                                          upstream: Upstream) -> None:
    upstream.failures = {"/flaky": 2, "/limited": 1}
    step = """\
action: http_request
url: "{{ params.url }}"
retry: {max_attempts: 3, backoff: 1ms}
"""
    async with gateway(tmp_path, storage_url, calling(step)) as (client, _):
        flaky = await client.post("/api/1.1/wf/call", json={"url": upstream.url + "/flaky"})
        assert flaky.status_code == 200, flaky.text
        limited = await client.post("/api/1.1/wf/call", json={"url": upstream.url + "/limited"})
        assert limited.status_code == 200, limited.text
    assert [r["path"] for r in upstream.received] == ["/flaky"] * 3 + ["/limited"] * 2


async def test_a_request_that_still_fails_is_a_502(tmp_path: Path, storage_url: str,
                                                   upstream: Upstream) -> None:
    upstream.failures = {"/down": 10}
    step = """\
action: http_request
url: "{{ params.url }}?key={{ secrets.API_TOKEN }}"
headers: {Authorization: "Bearer {{ secrets.API_TOKEN }}"}
retry: {max_attempts: 2, backoff: 1ms}
"""
    async with gateway(tmp_path, storage_url, calling(step)) as (client, storage):
        response = await client.post("/api/1.1/wf/call", json={"url": upstream.url + "/down"})
        assert response.status_code == 502, response.text
        body = response.json()["body"]
        assert body["status"] == "UPSTREAM_ERROR"
        assert "after 2 attempt(s)" in body["message"] and "503" in body["message"]
        assert TOKEN not in response.text
        logged = await run_log(storage, response)
        assert TOKEN not in logged and "UPSTREAM_ERROR" in logged
        refused = await client.post("/api/1.1/wf/call", json={"url": "http://127.0.0.1:1"})
        assert refused.status_code == 502
        assert "could not connect" in refused.json()["body"]["message"]


async def test_unexpected_status_fails_and_expect_status_accepts(
        tmp_path: Path, upstream: Upstream) -> None:
    strict = calling("{action: http_request, url: '{{ params.url }}/status/404'}")
    lenient = calling("{action: http_request, url: '{{ params.url }}/status/404', "
                      "expect_status: [200, 404]}").replace("name: call", "name: lenient")
    database = f"sqlite:///{tmp_path / 'g.db'}"
    async with gateway(tmp_path, database, strict, lenient) as (client, _):
        failed = await client.post("/api/1.1/wf/call", json={"url": upstream.url})
        assert failed.status_code == 502
        assert "answered 404" in failed.json()["body"]["message"]
        ok = await client.post("/api/1.1/wf/lenient", json={"url": upstream.url})
        assert ok.json()["response"]["result"]["status"] == 404


async def test_on_error_continue_swallows_the_failure(tmp_path: Path, upstream: Upstream) -> None:
    wf = calling("{action: http_request, url: '{{ params.url }}/status/500', "
                 "on_error: continue}").replace('data: {result: "{{ steps.called }}"}',
                                                "data: {ok: true}")
    async with gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", wf) as (client, _):
        response = await client.post("/api/1.1/wf/call", json={"url": upstream.url})
        assert response.json()["response"] == {"ok": True}


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.com/x", "http or https"),
    ("not a url", "http or https"),
    ("http://", "http or https"),
    ("http://[::1", "not valid"),
    ("http://example.com:99999/", "not valid"),
    ("http://exa mple.com/\x00", "not valid"),
])
async def test_hostile_urls_fail_clearly(tmp_path: Path, storage_url: str, url: str,
                                         reason: str) -> None:
    async with gateway(tmp_path, storage_url,
                       calling("{action: http_request, url: '{{ params.url }}'}")) as (
            client, storage):
        response = await client.post("/api/1.1/wf/call", json={"url": url})
        assert response.status_code == 400
        assert response.json()["body"]["status"] == "INVALID_DATA"
        assert reason in response.json()["body"]["message"]
        assert "failed" in await run_log(storage, response) or "rejected" in \
            await run_log(storage, response)


async def test_a_response_over_the_limit_fails_the_step(tmp_path: Path,
                                                        upstream: Upstream) -> None:
    wf = calling("{action: http_request, url: '{{ params.url }}/big'}")
    async with gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", wf,
                       settings="http: {max_response_bytes: 1000}\n") as (client, storage):
        response = await client.post("/api/1.1/wf/call", json={"url": upstream.url})
        assert response.status_code == 500
        assert "http.max_response_bytes" in await run_log(storage, response)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "10.0.0.1",
                                  "169.254.169.254", "[::ffff:127.0.0.1]", "0.0.0.0"])
async def test_private_addresses_are_refused_before_anything_is_sent(
        tmp_path: Path, storage_url: str, upstream: Upstream, host: str) -> None:
    port = upstream.url.rsplit(":", 1)[1]
    wf = calling("{action: http_request, url: '{{ params.url }}', timeout: 2s}")
    async with gateway(tmp_path, storage_url, wf,
                       settings="http: {block_private_addresses: true}\n") as (client, storage):
        response = await client.post("/api/1.1/wf/call", json={"url": f"http://{host}:{port}/"})
        assert response.status_code == 502, response.text
        if host in ("127.0.0.1", "localhost"):
            message = response.json()["body"]["message"]
            assert "non-public address" in message
            if host == "localhost":  # what the name resolved to is the server log's alone
                assert "127.0.0.1" not in message
    assert upstream.received == []


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False), ("::1", False),
    ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False), ("100.64.0.1", False),
    ("169.254.169.254", False), ("fe80::1", False), ("fc00::1", False), ("0.0.0.0", False),
    ("::ffff:10.0.0.1", False), ("2002:7f00:1::", False), ("224.0.0.1", False),
])
def test_which_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(address) is public


# --- send_email -------------------------------------------------------------------------------


def mailing(step: str) -> str:
    return calling(step, params="{to: {type: text}}").replace(
        'data: {result: "{{ steps.called }}"}', 'data: {sent: "{{ steps.called.recipients }}"}')


def smtp_settings(port: int) -> str:
    return (f"smtp: {{host: 127.0.0.1, port: {port}, starttls: false, username: ops, "
            "password: '{{ secrets.API_TOKEN }}', from: gateway@example.com}\n")


async def test_a_multipart_message_is_delivered(tmp_path: Path, storage_url: str,
                                                smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    step = """\
action: send_email
to: "{{ params.to }}"
cc: [cc@example.com]
bcc: hidden@example.com
reply_to: replies@example.com
subject: "Invoice {{ params.to }}"
text: "Paid, thanks."
html: "<p>Paid, <b>thanks</b>.</p>"
"""
    async with gateway(tmp_path, storage_url, mailing(step),
                       settings=smtp_settings(port)) as (client, _):
        response = await client.post("/api/1.1/wf/call", json={"to": "ada@example.com"})
        assert response.status_code == 200, response.text
        assert response.json()["response"] == {"sent": 3}
    envelope, message = inbox.messages[0]
    assert sorted(envelope.rcpt_tos) == ["ada@example.com", "cc@example.com",
                                         "hidden@example.com"]
    assert envelope.mail_from == "gateway@example.com"
    assert message["To"] == "ada@example.com" and message["Cc"] == "cc@example.com"
    assert message["Bcc"] is None and "hidden" not in message.as_string()
    assert message["Reply-To"] == "replies@example.com"
    assert message["Subject"] == "Invoice ada@example.com"
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == "Paid, thanks."
    assert html is not None and "<b>thanks</b>" in html.get_content()


async def test_a_header_injection_is_refused_and_nothing_is_sent(
        tmp_path: Path, storage_url: str, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    step = "{action: send_email, to: '{{ params.to }}', subject: hi, text: body}"
    async with gateway(tmp_path, storage_url, mailing(step),
                       settings=smtp_settings(port)) as (client, _):
        response = await client.post("/api/1.1/wf/call",
                                     json={"to": "a@example.com\r\nBcc: victim@example.com"})
        assert response.status_code == 400
        assert response.json()["body"]["status"] == "INVALID_DATA"
        assert "\r" not in response.json()["body"]["message"]
        bad = await client.post("/api/1.1/wf/call", json={"to": "not an address"})
        assert bad.status_code == 400
    assert inbox.messages == []


async def test_an_unreachable_or_refusing_server_is_a_502(tmp_path: Path,
                                                          smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    step = "{action: send_email, to: '{{ params.to }}', subject: hi, text: body}"
    database = f"sqlite:///{tmp_path / 'g.db'}"
    async with gateway(tmp_path, database, mailing(step),
                       settings=smtp_settings(port)) as (client, storage):
        response = await client.post("/api/1.1/wf/call", json={"to": "a@refused.example.com"})
        assert response.status_code == 502, response.text
        assert response.json()["body"]["status"] == "UPSTREAM_ERROR"
        assert TOKEN not in await run_log(storage, response)
    down = smtp_settings(1)
    async with gateway(tmp_path / "b", database, mailing(step), settings=down) as (client, _):
        response = await client.post("/api/1.1/wf/call", json={"to": "a@example.com"})
        assert response.status_code == 502
    assert inbox.messages == []


@pytest.mark.parametrize("password", ["'{{ secrets.OTHER }}'", "'{{ secrets.API_TOKEN ~ 1 }}'"])
def test_the_smtp_password_must_name_a_declared_secret(tmp_path: Path, password: str) -> None:
    (tmp_path / "w.yaml").write_text(
        "kind: settings\nsecrets: [API_TOKEN]\n"
        f"smtp: {{host: mail.example.com, password: {password}}}\n")
    _, problems = check([tmp_path])
    assert [p.code for p in problems] == ["ref.unknown-secret"]


async def test_a_failing_call_logs_the_callers_text_escaped(
        tmp_path: Path, upstream: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    upstream.failures = {"/down": 10}
    wf = calling("{action: http_request, url: '{{ params.url }}'}")
    async with gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", wf) as (client, _):
        with caplog.at_level("INFO"):
            for forged in (upstream.url + "/down\r\nFORGED LINE",
                           "http://\nFORGED LINE.example/", upstream.url + "/down?\nFORGED"):
                response = await client.post("/api/1.1/wf/call", json={"url": forged})
                assert response.status_code in (400, 502), response.text
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert logged and "\nFORGED" not in logged and "\rFORGED" not in logged


def test_gateway_run_has_the_http_client_too(tmp_path: Path, upstream: Upstream) -> None:
    (tmp_path / "w.yaml").write_text(calling(
        "{action: http_request, url: '{{ params.url }}/from-cli'}"))
    result = CliRunner().invoke(main, [
        "run", "call", "-p", f"url={upstream.url}", "--config", str(tmp_path),
        "--database", f"sqlite:///{tmp_path / 'g.db'}"])
    assert result.exit_code == 0, result.output
    assert "\"status\": 200" in result.output or "\"status\":200" in result.output, result.output
    assert upstream.received[0]["path"] == "/from-cli"
