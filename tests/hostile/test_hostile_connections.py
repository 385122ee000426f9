"""Hostile connections on the gateway's own server: one client address cannot take every
connection slot, and a connection that never sends a byte is closed soon.

On loopback every client is 127.0.0.1 unless it binds another address: Linux routes the
whole of 127.0.0.0/8 to `lo`, so the "other client" here connects from 127.0.0.2, and the
server, which counts connections by the socket's peer, sees two addresses.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_hostile_http import ROOT, free_port, read_response, wait_for_health, write_config

from gateway.runtime.forwarded import network

PING = b"GET /api/1.1/wf/ping HTTP/1.1\r\nHost: gw\r\n\r\n"
CONFIG = """
kind: settings
server: SERVER
---
kind: api_workflow
name: ping
expose: true
auth: none
method: GET
steps:
  - action: return_data
    data: {pong: true}
"""


@contextlib.contextmanager
def served(tmp_path: Path, server: str) -> Iterator[int]:
    """`gateway serve` as a process with the `server:` settings given; its port."""
    config = write_config(tmp_path, CONFIG, SERVER=server)
    port, log_path = free_port(), tmp_path / "server.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
             str(port), "--database", f"sqlite:///{tmp_path / 'gateway.db'}"],
            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_for_health(port, process, log_path)
            yield port
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A connection to the server from `source`, a loopback address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(20)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (at most the socket's 20 s timeout)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def pong(sock: socket.socket) -> bytes:
    sock.sendall(PING)
    head, body, _ = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200 "), head
    return body


def test_one_address_past_its_cap_is_refused_and_another_is_served(tmp_path: Path) -> None:
    """The issue's flood, scaled down: one address opens three times `max_connections`
    idle sockets; past its cap each is answered 503 and closed at once, the sockets it
    holds keep working, and a client at another address is served."""
    with served(tmp_path, "{max_connections: 10, max_connections_per_address: 3, "
                          "first_byte_timeout: 60s, header_timeout: 60s}") as port:
        held = [connect(port) for _ in range(3)]
        flood = [connect(port) for _ in range(30)]
        try:
            for sock in flood:
                answer = read_to_end(sock)
                assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
                assert b'"TOO_MANY_CONNECTIONS"' in answer
                assert b"max_connections_per_address" in answer
            with connect(port, "127.0.0.2") as other:
                assert b'"pong":true' in pong(other)
            for sock in held:
                assert b'"pong":true' in pong(sock)
            held.pop().close()
            # Once the server has seen that one close, the address may connect again.
            deadline = time.monotonic() + 20
            while True:
                with connect(port) as again:
                    again.sendall(PING)
                    head, _, _ = read_response(again)
                if head.startswith(b"HTTP/1.1 200 ") or time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # polling a condition, with a deadline that says what it waits for
            assert head.startswith(b"HTTP/1.1 200 "), head
        finally:
            for sock in held + flood:
                sock.close()


def test_a_trusted_proxy_is_not_capped(tmp_path: Path) -> None:
    """Behind a proxy every client comes from the proxy's address: a trusted proxy holds more
    connections than the cap, while another address is still capped."""
    with served(tmp_path, "{max_connections_per_address: 2, first_byte_timeout: 60s, "
                          "trusted_proxies: [127.0.0.1]}") as port:
        held = [connect(port) for _ in range(6)]
        others = [connect(port, "127.0.0.2") for _ in range(3)]
        try:
            for sock in held:
                assert b'"pong":true' in pong(sock)
            assert read_to_end(others[-1]).startswith(b"HTTP/1.1 503 ")
        finally:
            for sock in held + others:
                sock.close()


def test_a_silent_connection_is_closed_after_first_byte_timeout(tmp_path: Path) -> None:
    """A connection that sends nothing gets 408 and is closed once `first_byte_timeout`
    passes, long before `header_timeout`; one that began its request is not."""
    with served(tmp_path, "{first_byte_timeout: 1s, header_timeout: 60s}") as port:
        with connect(port) as silent, connect(port) as slow:
            slow.sendall(b"GET /api/1.1/wf/ping HTTP/1.1\r\n")
            answer = read_to_end(silent)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b'"REQUEST_TIMEOUT"' in answer and b"first_byte_timeout" in answer
            slow.sendall(b"Host: gw\r\n\r\n")  # still open: its head has a minute
            head, body, _ = read_response(slow)
            assert head.startswith(b"HTTP/1.1 200 ") and b'"pong":true' in body, head


def test_a_connection_upgraded_to_a_websocket_no_longer_counts(tmp_path: Path) -> None:
    """uvicorn hands an upgraded connection to another protocol, whose end the counting one
    never sees: it is given back at the upgrade, so the address is not locked out."""
    with served(tmp_path, "{max_connections_per_address: 1, first_byte_timeout: 60s}") as port:
        for _ in range(3):
            with connect(port) as sock:
                sock.sendall(b"GET /ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\n"
                             b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
                answer = read_to_end(sock)
                assert b"TOO_MANY_CONNECTIONS" not in answer, answer[:200]
                assert answer.startswith(b"HTTP/1.1 403 "), answer[:200]  # no websocket route


@pytest.mark.parametrize(("host", "key"), [
    ("203.0.113.7", "203.0.113.7"),
    ("::ffff:203.0.113.7", "203.0.113.7"),  # an IPv4 client of a dual-stack socket
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same host's network: one count
    ("fe80::1%eth0", "fe80::/64"),
    ("not-an-address", "not-an-address"),
])
def test_connections_are_counted_per_ipv4_address_and_per_ipv6_64(host: str, key: str) -> None:
    assert network(host) == key
