"""The HTTP server's connections: httptools as uvicorn drives it, with what it lacks.

uvicorn's httptools protocol reads a request's line, headers and body with no bound on their
size and no deadline (a client can send 64 MiB of headers, or one byte a minute, or nothing
at all, and hold the connection). This protocol closes a connection whose line and headers
pass `server.max_header_bytes` (431) or take longer than `server.header_timeout` (408) from
their first byte, whose body takes longer than `server.body_timeout` (408), or that sends
nothing for `server.first_byte_timeout` once open (408, closed at once: there is nothing to
drain). Every answer carries the gateway's JSON error envelope.

One client must not hold every connection uvicorn's `limit_concurrency` allows: a process
keeps at most `server.max_connections_per_address` connections open per client address (the
socket's peer: an IPv6 client by its /64, which is what one host is given). A connection past
it is answered 503 and closed as it opens, before anything is read, and the others are left
alone. A trusted proxy (`server.trusted_proxies`) is not capped: it carries every client.

A timer is set only for a request that did not arrive whole in one read: most do, and pay
nothing for these deadlines.

A refused connection closes lingering, as Apache and nginx do: the answer is sent and the
sending side shut, then what the client still sends is read and dropped for a moment (two
seconds, 4 MiB at most) before the socket closes, so that the client reads the answer
rather than a reset that unread data would cause.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
import weakref
from http import HTTPStatus
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.core.errors import (
    GatewayError,
    HeadersTooLargeError,
    RequestTimeoutError,
    TooManyConnectionsError,
)
from gateway.runtime.envelope import render_error
from gateway.runtime.forwarded import Proxies, network

# `gateway serve` sets it for every worker process (in seconds), as it sets the config path.
HEADER_TIMEOUT_ENV = "GATEWAY_HEADER_TIMEOUT"
BODY_TIMEOUT_ENV = "GATEWAY_BODY_TIMEOUT"
FIRST_BYTE_TIMEOUT_ENV = "GATEWAY_FIRST_BYTE_TIMEOUT"
PER_ADDRESS_ENV = "GATEWAY_MAX_CONNECTIONS_PER_ADDRESS"
TRUSTED_PROXIES_ENV = "GATEWAY_TRUSTED_PROXIES"  # comma-separated
DEFAULT_MAX_HEADER_BYTES = 65_536
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_FIRST_BYTE_TIMEOUT = 5.0
DEFAULT_PER_ADDRESS = 64
WARN_SECONDS = 60.0  # refused connections are said in the log at most this often
LINGER_SECONDS = 2.0
LINGER_BYTES = 4 * 1024 * 1024
log = logging.getLogger("gateway.server")


class AddressCounts:
    """The connections open per client address in one server (one worker process), and the
    trusted proxies, whose connections are not capped: every client behind them comes from
    their address."""

    def __init__(self, proxies: Proxies) -> None:
        self.proxies = proxies
        self.open: collections.Counter[str] = collections.Counter()
        self.refused = 0  # since the last warning
        self.warned_at = -WARN_SECONDS

    def take(self, address: str, most: int) -> bool:
        """Count one more connection of `address`; False (nothing counted) past `most`."""
        if self.open[address] >= most:
            self.refused += 1
            return False
        self.open[address] += 1
        return True

    def give_back(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]

    def warn(self, address: str, most: int) -> None:
        now = time.monotonic()
        if now - self.warned_at >= WARN_SECONDS:
            self.warned_at = now
            log.warning("refused %d connection(s) past server.max_connections_per_address "
                        "(%d), the latest from %s", self.refused, most, address)
            self.refused = 0


def trusted_proxies() -> Proxies:
    """The proxies `gateway serve` was started behind (`server.trusted_proxies`)."""
    listed = os.environ.get(TRUSTED_PROXIES_ENV, "")
    return Proxies([n for n in listed.split(",") if n.strip()])


# Per server (uvicorn's `ServerState`, one per process), so that two servers in one process
# count apart.
_COUNTS: weakref.WeakKeyDictionary[ServerState, AddressCounts] = weakref.WeakKeyDictionary()


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
        self.first_byte_timeout = float(os.environ.get(FIRST_BYTE_TIMEOUT_ENV,
                                                       DEFAULT_FIRST_BYTE_TIMEOUT))
        self.per_address = int(os.environ.get(PER_ADDRESS_ENV, DEFAULT_PER_ADDRESS))
        counts = _COUNTS.get(server_state)
        if counts is None:
            counts = _COUNTS[server_state] = AddressCounts(trusted_proxies())
        self.counts = counts
        self.address: str | None = None  # counted in `counts` while the connection is open
        self.silent = True  # nothing received yet: the first-byte deadline runs
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
        if self.client is not None and not self.counts.proxies.trusts(self.client[0]):
            address = network(self.client[0])
            if not self.counts.take(address, self.per_address):
                self.refuse_connection(address)
                return
            self.address = address
        self.header_timer = self.loop.call_later(self.first_byte_timeout, self.silence_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.give_back()
        self.stop_header_timer()
        self.stop_body_timer()
        if self.linger_timer is not None:
            self.linger_timer.cancel()
        super().connection_lost(exc)

    def give_back(self) -> None:
        """The connection no longer counts against its address."""
        if self.address is not None:
            self.counts.give_back(self.address)
            self.address = None

    def handle_websocket_upgrade(self) -> None:
        # The connection goes on under another protocol: this one never sees it end.
        self.give_back()
        super().handle_websocket_upgrade()

    def data_received(self, data: bytes) -> None:
        if self.refused:  # lingering: dropped unread
            self.lingered += len(data)
            if self.lingered > LINGER_BYTES:
                self.transport.close()
            return
        if self.transport.is_closing():
            return
        if self.silent:  # the first byte: the head's own deadline runs from here
            self.silent = False
            self.stop_header_timer()
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

    def silence_timed_out(self) -> None:
        self.header_timer = None
        if self.silent and not self.refused and not self.transport.is_closing():
            self.refused = True
            self.answer(RequestTimeoutError(
                f"No request arrived within {self.first_byte_timeout:g} s of connecting "
                "(server.first_byte_timeout)"))
            self.transport.close()  # nothing was received: nothing to drain

    def refuse_connection(self, address: str) -> None:
        """A connection past the address's cap: 503 and closed, before anything is read."""
        self.refused = True
        self.counts.warn(address, self.per_address)
        self.answer(TooManyConnectionsError(
            f"This address has {self.per_address} connections open already "
            "(server.max_connections_per_address); retry once one of them closes"))
        self.transport.close()

    def answer(self, error: GatewayError) -> None:
        """Write `error` as a whole response that closes the connection."""
        rendered = render_error(error)
        body = rendered.body if isinstance(rendered.body, bytes) else rendered.body.encode()
        phrase = HTTPStatus(error.status).phrase
        head = (f"HTTP/1.1 {error.status} {phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
        self.transport.write(head.encode("latin-1") + body)

    def refuse(self, error: GatewayError) -> None:
        """Answer with the error and close: what else the client sends is not read."""
        self.refused = True
        client = "%s:%d" % self.client if self.client else "a client"
        log.info("closed the connection of %s: %s", client, error.code)
        self.answer(error)
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
