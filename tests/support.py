"""What several test modules share: the shipped configs (`workflows.d/` and the folders of
`examples/`), a settable clock, SQL run on a store's database from outside it, and real
servers on loopback standing in for the systems the examples call (an exchange-rate API, an
SMTP server)."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS_D = ROOT / "workflows.d"  # served by `gateway serve` as shipped: no secret needed
EXAMPLES = ROOT / "examples"  # a complete config per folder, each with the secrets it needs


def example_folders() -> list[Path]:
    """The folders of `examples/`, by name."""
    return sorted(path for path in EXAMPLES.iterdir() if path.is_dir())


class Clock:
    """A clock a test sets: `clock.now = ...`. `monotonic` reads the same time in seconds,
    for what counts in monotonic time (the credential cache): moving `now` on moves both."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.now.timestamp()


def run_sql(url: str, *statements: str) -> None:
    """Statements run and committed on a store's database (by its URL), from a connection
    of the test's own: a database made to refuse a write, or taken back to an older schema."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            with conn:
                for statement in statements:
                    conn.execute(statement)
        return
    with psycopg.connect(url) as pg:
        for statement in statements:
            pg.execute(statement.encode())


@contextlib.contextmanager
def rates_api() -> Iterator[str]:
    """A real HTTP server on loopback standing in for the exchange-rate API; its URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            base = self.path.partition("base=")[2] or "?"
            body = json.dumps({"base": base, "rates": {"USD": 1.08, "GBP": 0.86}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Inbox:
    """The messages an SMTP server on loopback received."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@contextlib.contextmanager
def smtp_server(inbox: Inbox | None = None) -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server (aiosmtpd) on loopback; its inbox (a new `Inbox`, or the one
    given) and port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    found = inbox if inbox is not None else Inbox()
    controller = Controller(found, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield found, port
    finally:
        controller.stop()
