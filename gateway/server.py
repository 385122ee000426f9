"""The HTTP server's connections: httptools as uvicorn drives it, with what it lacks.

uvicorn's httptools protocol reads a request's line, headers and body with no bound on their
size and no deadline (a client can send 64 MiB of headers, or one byte a minute, or nothing
at all, and hold the connection). This protocol closes a connection whose line and headers
pass `server.max_header_bytes` (431) or take longer than `server.header_timeout` (408), a new
connection that stays silent included, or whose body takes longer than `server.body_timeout`
(408). Every answer carries the gateway's JSON error envelope.

A timer is set only for a request that did not arrive whole in one read: most do, and pay
nothing for these deadlines.

A refused connection closes lingering, as Apache and nginx do: the answer is sent and the
sending side shut, then what the client still sends is read and dropped for a moment (two
seconds, 4 MiB at most) before the socket closes, so that the client reads the answer
rather than a reset that unread data would cause.
"""

from __future__ import annotations

import asyncio
import logging
import os
from http import HTTPStatus
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.envelope import render_error
from gateway.errors import GatewayError, HeadersTooLargeError, RequestTimeoutError

# `gateway serve` sets it for every worker process (in seconds), as it sets the config path.
HEADER_TIMEOUT_ENV = "GATEWAY_HEADER_TIMEOUT"
BODY_TIMEOUT_ENV = "GATEWAY_BODY_TIMEOUT"
DEFAULT_MAX_HEADER_BYTES = 65_536
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
LINGER_SECONDS = 2.0
LINGER_BYTES = 4 * 1024 * 1024
log = logging.getLogger("gateway.server")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools with a size bound and a deadline on each request's line and headers. The
    size bound is uvicorn's own `h11_max_incomplete_event_size` setting, which httptools
    otherwise ignores."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_header_bytes = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEADER_BYTES
        self.header_timeout = float(os.environ.get(HEADER_TIMEOUT_ENV, DEFAULT_HEADER_TIMEOUT))
        self.body_timeout = float(os.environ.get(BODY_TIMEOUT_ENV, DEFAULT_BODY_TIMEOUT))
        self.header_bytes = 0
        self.reading = 0  # the size of the read being parsed
        self.in_headers = True
        self.in_body = False
        self.header_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.refused = False  # once answered, the rest of what the parser holds is ignored
        self.lingered = 0  # bytes read and dropped since the refusal
        self.linger_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_header_timer()
        self.stop_body_timer()
        if self.linger_timer is not None:
            self.linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:  # lingering: dropped unread
            self.lingered += len(data)
            if self.lingered > LINGER_BYTES:
                self.transport.close()
            return
        if self.transport.is_closing():
            return
        self.reading = len(data)
        super().data_received(data)
        if self.refused or self.transport.is_closing():
            return
        if self.in_headers:
            # Headers still coming: what httptools holds so far (checked exactly once
            # complete), and a deadline for the rest.
            self.header_bytes += len(data)
            if self.header_bytes > self.max_header_bytes:
                self.refuse_headers()
            elif self.header_timer is None:
                self.start_header_timer()
        elif self.in_body and self.body_timer is None:
            self.body_timer = self.loop.call_later(self.body_timeout, self.body_timed_out)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_headers = True
        self.header_bytes = 0

    def on_headers_complete(self) -> None:
        self.in_headers = False
        self.in_body = True
        self.stop_header_timer()
        # Counted exactly only when the bytes read for this message so far, the read under
        # way included (the headers and whatever came with them), pass the bound: most
        # requests' are well under it.
        if self.header_bytes + self.reading > self.max_header_bytes and len(self.url) + sum(
                len(name) + len(value) + 4 for name, value in self.headers) > self.max_header_bytes:
            self.refuse_headers()
        if not self.refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self.in_body = False
        self.stop_body_timer()
        if not self.refused:
            super().on_message_complete()

    def refuse_headers(self) -> None:
        self.refuse(HeadersTooLargeError(
            f"The request line and headers are larger than {self.max_header_bytes} bytes "
            "(server.max_header_bytes)"))

    def start_header_timer(self) -> None:
        self.header_timer = self.loop.call_later(self.header_timeout, self.headers_timed_out)

    def stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def stop_body_timer(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def body_timed_out(self) -> None:
        self.body_timer = None
        if self.in_body and not self.refused and not self.transport.is_closing():
            self.refuse(RequestTimeoutError(
                f"The request body did not arrive within {self.body_timeout:g} s "
                "(server.body_timeout)"))

    def headers_timed_out(self) -> None:
        self.header_timer = None
        if self.in_headers and not self.refused and not self.transport.is_closing():
            self.refuse(RequestTimeoutError(
                f"The request line and headers did not arrive within {self.header_timeout:g} s "
                "(server.header_timeout)"))

    def refuse(self, error: GatewayError) -> None:
        """Answer with the error and close: what else the client sends is not read."""
        self.refused = True
        client = "%s:%d" % self.client if self.client else "a client"
        log.info("closed the connection of %s: %s", client, error.code)
        rendered = render_error(error)
        body = rendered.body if isinstance(rendered.body, bytes) else rendered.body.encode()
        phrase = HTTPStatus(error.status).phrase
        head = (f"HTTP/1.1 {error.status} {phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
        self.transport.write(head.encode("latin-1") + body)
        self.stop_header_timer()
        self.stop_body_timer()
        if self.cycle is not None:  # the app's answer, if it still comes, goes nowhere
            if not self.cycle.response_complete:
                self.cycle.disconnected = True
            self.cycle.message_event.set()
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()
