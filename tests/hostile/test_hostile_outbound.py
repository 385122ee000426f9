"""Hostile answers to `http_request` (a compression bomb, a server sending a byte a second,
a lone surrogate in JSON, a charset that is not one, odd `Retry-After` values), secrets in
the forms a URL or an HTTP library's error carries them, recipients an SMTP server refuses,
and the in-process rate limits under a flood of callers: each on both backends where a run
is recorded. The upstream is a real server on loopback that writes whatever bytes a test
scripts."""

from __future__ import annotations

import email.utils
import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Serve

from gateway.runtime.http_client import is_public
from gateway.webhooks.guard import LocalRates
from tests.actions.test_outbound import (
    Inbox,
    calling,
    gateway,
    mailing,
    run_log,
    smtp,  # noqa: F401 - a fixture
    smtp_settings,
)

Answer = Callable[[socket.socket, bytes], None]


class RawUpstream:
    """A loopback server answering each request with what `answers[path]` writes."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.open = True

    def serve(self) -> None:
        while self.open:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            self.requests.append(head)
            path = head.split(b" ", 2)[1].decode().split("?")[0]
            try:
                self.answers.get(path, reply(503, b"{}"))(conn, head)
            except OSError:
                pass  # the client hung up: what some tests expect


@pytest.fixture
def raw() -> Iterator[RawUpstream]:
    upstream = RawUpstream()
    threading.Thread(target=upstream.serve, daemon=True).start()
    yield upstream
    upstream.open = False
    upstream.sock.close()


def reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> Answer:
    def answer(conn: socket.socket, head: bytes) -> None:
        lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        conn.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body)
    return answer


def call(url: str, **step: Any) -> str:
    return calling(json.dumps({"action": "http_request", "url": url, **step}))


# --- what an upstream answers -------------------------------------------------------------------


async def test_a_compression_bomb_stops_at_max_response_bytes(
        tmp_path: Path, storage_url: str, raw: RawUpstream) -> None:
    """A few kilobytes that inflate, twice, to a gigabyte: refused once the limit's worth is
    out, never inflated whole (the process would hold it in memory)."""
    bomb = gzip.compress(gzip.compress(b"\0" * (256 * 1024 * 1024), 9), 9)
    assert len(bomb) < 1_000_000
    raw.answers["/bomb"] = reply(200, bomb, {"Content-Encoding": "gzip, gzip"})
    raw.answers["/small"] = reply(200, gzip.compress(b'{"ok": true}'),
                                  {"Content-Encoding": "gzip", "Content-Type": "application/json"})
    raw.answers["/br"] = reply(200, b"\x0b\x02\x80hi\x03", {"Content-Encoding": "br"})
    async with gateway(tmp_path, storage_url, call(raw.url + "{{ params.url }}"),
                       settings="http: {max_response_bytes: 1048576}\n") as (client, storage):
        small = await client.post("/api/1.1/wf/call", json={"url": "/small"})
        assert small.json()["response"]["result"]["json"] == {"ok": True}
        bombed = await client.post("/api/1.1/wf/call", json={"url": "/bomb"})
        assert bombed.status_code == 500
        assert "http.max_response_bytes" in await run_log(storage, bombed)
        brotli = await client.post("/api/1.1/wf/call", json={"url": "/br"})
        assert brotli.status_code == 502
        assert "content coding it was not asked for" in brotli.json()["body"]["message"]
    assert all(b"accept-encoding: gzip, deflate" in r.lower() for r in raw.requests)


async def test_every_gzip_member_is_read_and_a_cut_stream_is_refused(
        tmp_path: Path, raw: RawUpstream) -> None:
    whole = gzip.compress(b'{"a": 1, ') + gzip.compress(b'"b": 2}')  # RFC 1952: members
    raw.answers["/two"] = reply(200, whole, {"Content-Encoding": "gzip",
                                             "Content-Type": "application/json"})
    raw.answers["/cut"] = reply(200, gzip.compress(b"x" * 1000)[:-12],
                                {"Content-Encoding": "gzip"})
    raw.answers["/br"] = reply(200, b"\x0b\x02\x80hi\x03", {"Content-Encoding": "br"})
    wf = calling(json.dumps({"action": "http_request", "url": raw.url + "{{ params.url }}",
                             "headers": {"Accept-Encoding": "br"}})).replace(
        "name: call", "name: brotli")
    async with gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}",
                       call(raw.url + "{{ params.url }}"), wf) as (client, _):
        two = await client.post("/api/1.1/wf/call", json={"url": "/two"})
        assert two.json()["response"]["result"]["json"] == {"a": 1, "b": 2}, two.text
        cut = await client.post("/api/1.1/wf/call", json={"url": "/cut"})
        assert cut.status_code == 502 and "not valid gzip" in cut.json()["body"]["message"]
        # a coding the workflow asked for itself, which the step cannot undo: as it came
        brotli = await client.post("/api/1.1/wf/brotli", json={"url": "/br"})
        assert brotli.status_code == 200, brotli.text
        assert brotli.json()["response"]["result"]["text"] == "\x0b\x02\ufffdhi\x03"


@pytest.mark.parametrize("slow", ["headers", "body"])
async def test_the_step_timeout_bounds_the_whole_attempt(
        tmp_path: Path, raw: RawUpstream, slow: str) -> None:
    """A server sending a byte every 0.3 s never lets one read time out: the attempt's
    `timeout` is for all of it."""
    def drip(conn: socket.socket, head: bytes) -> None:
        start = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n"
        text = start + b"x" * 20
        cut = 0 if slow == "headers" else len(start)
        conn.sendall(text[:cut])
        for byte in text[cut:]:
            conn.sendall(bytes([byte]))
            time.sleep(0.3)

    raw.answers["/drip"] = drip
    wf = call(raw.url + "/drip", timeout="1s")
    async with gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", wf) as (client, _):
        response = await client.post("/api/1.1/wf/call", json={"url": "-"})
    assert response.status_code == 502, response.text
    assert "timed out after 1 s" in response.json()["body"]["message"]


@pytest.mark.parametrize(("body", "content_type", "text"), [
    (b'{"a": "\\ud800"}', "application/json", '{"a": "\\ud800"}'),
    (b'{"a": 1}', "application/json; charset=zlib", '{"a": 1}'),
    (b'{"a": 1}', "application/json; charset=hex", '{"a": 1}'),
    (b"caf\xe9", "text/plain; charset=idna", "caf\ufffd"),
])
async def test_an_upstream_body_that_cannot_be_read_as_said_is_kept_as_text(
        tmp_path: Path, storage_url: str, raw: RawUpstream, body: bytes, content_type: str,
        text: str) -> None:
    """A lone surrogate is no JSON (it could not be answered either); a charset that is no
    text encoding reads as UTF-8."""
    raw.answers["/odd"] = reply(200, body, {"Content-Type": content_type})
    async with gateway(tmp_path, storage_url, call(raw.url + "/odd")) as (client, storage):
        response = await client.post("/api/1.1/wf/call", json={"url": "-"})
        assert response.status_code == 200, response.text
        result = response.json()["response"]["result"]
        assert result["text"] == text
        assert result["json"] == ({"a": 1} if body == b'{"a": 1}' else None)
        assert '"status": "success"' in await run_log(storage, response)


@pytest.mark.parametrize("value", ["1.5", "-1", "soon", "\u00b2", "Mon, 99 Foo 2020 x"])
async def test_a_retry_after_that_is_no_delay_is_retried_after_the_backoff(
        tmp_path: Path, raw: RawUpstream, value: str) -> None:
    calls: list[int] = []

    def flaky(conn: socket.socket, head: bytes) -> None:
        calls.append(1)
        if len(calls) == 1:
            reply(503, b"{}", {"Retry-After": value})(conn, head)
        else:
            reply(200, b"{}")(conn, head)

    raw.answers["/flaky"] = flaky
    wf = call(raw.url + "/flaky", retry={"max_attempts": 2, "backoff": "1ms"})
    async with gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", wf) as (client, _):
        response = await client.post("/api/1.1/wf/call", json={"url": "-"})
    assert response.status_code == 200, response.text
    assert len(calls) == 2


async def test_a_retry_after_date_counts_from_when_the_answer_came(
        serve: Serve, raw: RawUpstream) -> None:
    """The run's clock says an hour ago (a long run, or a test's): the server's date, a
    second from now, is a second's wait, not the 300 s cap past the run's time limit."""
    calls: list[int] = []

    def limited(conn: socket.socket, head: bytes) -> None:
        calls.append(1)
        if len(calls) == 1:
            soon = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=1),
                                               usegmt=True)
            reply(429, b"{}", {"Retry-After": soon})(conn, head)
        else:
            reply(200, b"{}")(conn, head)

    raw.answers["/limited"] = limited
    config = "kind: settings\nlimits: {run_timeout: 20s}\n---\n" + call(
        raw.url + "/limited", retry={"max_attempts": 2, "backoff": "1ms"})
    past = datetime.now(UTC) - timedelta(hours=1)
    async with serve(config, clock=lambda: past) as gateway:
        response = await gateway.client.post("/api/1.1/wf/call", json={"url": "-"})
    assert response.status_code == 200, response.text
    assert len(calls) == 2


async def test_a_latin_1_header_value_is_sent_as_latin_1(tmp_path: Path,
                                                         raw: RawUpstream) -> None:
    raw.answers["/h"] = reply(200, b"{}")
    wf = call(raw.url + "/h", headers={"X-Name": "Jos\u00e9", "X-Padded": "  v  "})
    async with gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", wf) as (client, _):
        response = await client.post("/api/1.1/wf/call", json={"url": "-"})
    assert response.status_code == 200, response.text
    assert b"X-Name: Jos\xe9\r\n" in raw.requests[0]
    assert b"X-Padded: v\r\n" in raw.requests[0]


# --- secrets in the forms a URL or an error carries them ------------------------------------------


SECRET_URL = "/hooks/123/Tok3nSecretValue?wait=true"


@pytest.mark.parametrize(("secret", "url"), [
    (None, "{{ secrets.HOOK }}"),  # the whole URL is the secret; the query is cut
    ("Tok3nSecretValue", "http://127.0.0.1:1/hooks/{{ secrets.HOOK | urlencode }}"),
    ("Tok3n/Secret Value", "http://127.0.0.1:1/hooks/{{ secrets.HOOK | urlencode }}"),
    ("Tok3nSecretHost", "http://{{ secrets.HOOK }}.invalid/x"),
    ("user:pa/ss@word", "http://{{ secrets.HOOK }}@127.0.0.1:1/x"),
    ("Tok3nSecret\t", "http://127.0.0.1:1/x"),  # in a header, with a tab
])
async def test_a_secret_never_reaches_the_caller_or_the_logs_in_any_form(
        tmp_path: Path, storage_url: str, raw: RawUpstream, secret: str | None, url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    secret = secret or raw.url + SECRET_URL
    step = {"action": "http_request", "url": url, "timeout": "2s"}
    if "\t" in secret:
        step["headers"] = {"X-Key": "a{{ secrets.HOOK }}b"}
    async with gateway(tmp_path, storage_url, calling(json.dumps(step)),
                       secrets={"HOOK": secret}) as (client, storage):
        response = await client.post("/api/1.1/wf/call", json={"url": "-"})
        logged = await run_log(storage, response)
    assert response.status_code in (400, 502), response.text
    seen = response.text + logged + caplog.text
    for part in ("Tok3n", "pa/ss", "ss@word", "/hooks/123"):
        if part in secret:
            assert part not in seen and part.lower() not in seen.lower(), seen


# --- send_email -------------------------------------------------------------------------------


async def test_recipients_the_server_refuses_are_said_while_the_others_get_it(
        tmp_path: Path, storage_url: str, smtp: tuple[Inbox, int]) -> None:  # noqa: F811
    inbox, port = smtp
    step = ("{action: send_email, to: '{{ params.to }}', bcc: [b@refused.example.com], "
            "subject: hi, text: body}")
    wf = mailing(step).replace('data: {sent: "{{ steps.called.recipients }}"}',
                               'data: {sent: "{{ steps.called }}"}')
    async with gateway(tmp_path, storage_url, wf, settings=smtp_settings(port)) as (
            client, storage):
        response = await client.post("/api/1.1/wf/call",
                                     json={"to": "a@example.com, Ada <c@example.com>"})
        assert response.status_code == 200, response.text
        sent = response.json()["response"]["sent"]
        assert sent["recipients"] == 2
        assert list(sent["refused"]) == ["b@refused.example.com"]
        assert sent["refused"]["b@refused.example.com"].startswith("550")
        assert "b@refused.example.com" in await run_log(storage, response)
    (envelope, message), = inbox.messages
    assert sorted(envelope.rcpt_tos) == ["a@example.com", "c@example.com"]
    assert message["To"] == "a@example.com, Ada <c@example.com>"


async def test_an_internationalised_address_is_sent_to(
        tmp_path: Path, smtp: tuple[Inbox, int]) -> None:  # noqa: F811
    inbox, port = smtp
    step = "{action: send_email, to: '{{ params.to }}', subject: hi, text: body}"
    async with gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", mailing(step),
                       settings=smtp_settings(port)) as (client, _):
        one = await client.post("/api/1.1/wf/call", json={"to": "jos\u00e9@example.com"})
        two = await client.post("/api/1.1/wf/call",
                                json={"to": "\"Ada, L\" <ada@ex\u00e4mple.com>, b@example.com"})
    assert (one.status_code, two.status_code) == (200, 200), (one.text, two.text)
    assert [sorted(envelope.rcpt_tos) for envelope, _ in inbox.messages] == [
        ["jos\u00e9@example.com"], ["ada@ex\u00e4mple.com", "b@example.com"]]
    assert inbox.messages[1][1]["To"].addresses[0].display_name == "Ada, L"


@pytest.mark.parametrize("to", ["a@b.com\ttab", "a@x.com; b@y.com", "a@x.com, nobody",
                                "a@@b.com"])
async def test_an_address_list_it_cannot_send_to_whole_is_refused(
        tmp_path: Path, smtp: tuple[Inbox, int], to: str) -> None:  # noqa: F811
    inbox, port = smtp
    step = "{action: send_email, to: '{{ params.to }}', subject: hi, text: body}"
    async with gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", mailing(step),
                       settings=smtp_settings(port)) as (client, _):
        response = await client.post("/api/1.1/wf/call", json={"to": to})
    assert response.status_code == 400, response.text
    assert response.json()["body"]["status"] == "INVALID_DATA"
    assert inbox.messages == []


# --- addresses and rate limits ----------------------------------------------------------------


@pytest.mark.parametrize("address", ["64:ff9b::a00:1", "64:ff9b::a9fe:a9fe", "::7f00:1",
                                     "::ffff:0:7f00:1", "fec0::1", "3fff::1", "5f00::1",
                                     "64:ff9b:1::1"])
def test_ipv6_forms_of_private_addresses_are_not_public(address: str) -> None:
    assert is_public(address) is False
    assert is_public("64:ff9b::808:808") is True  # NAT64 of a public address


async def test_a_flood_to_one_workflow_never_resets_anothers_counters() -> None:
    rates = LocalRates(most=100)
    at = datetime.now(UTC)
    for _ in range(3):
        await rates.hit("login", "user:ada", 5, at)  # an hour-long window: bucket 5
    for caller in range(1000):  # a one-second window: buckets far higher
        await rates.hit("ping", f"ip:{caller}", 1_000_000 + caller, at)
    assert await rates.hit("login", "user:ada", 5, at) == 4
    assert len(rates.counters["ping"]) <= 100


async def test_ipv6_callers_count_by_their_64(serve: Serve) -> None:
    config = ("kind: api_workflow\nname: ping\nexpose: true\nauth: none\n"
              "rate_limit: {requests: 2, per: 1h}\nsteps: [{action: terminate}]\n")
    async with serve(config) as gateway:
        statuses = []
        peers = [*(f"2001:db8:1:2::{host}" for host in range(1, 5)),  # four of one /64
                 "2001:db8:1:3::1", "::ffff:192.0.2.1"]
        for peer in peers:
            async with gateway.connect((peer, 4000)) as client:
                statuses.append((await client.post("/api/1.1/wf/ping")).status_code)
    assert statuses == [200, 200, 429, 429, 200, 200]
