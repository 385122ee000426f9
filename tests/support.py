"""What several test modules share: the shipped configs (`workflows.d/` and the folders of
`examples/`), a settable clock, SQL run on a store's database from outside it, and real
servers on loopback standing in for the systems the examples call (an exchange-rate API, an
SMTP server, an upstream that keeps the headers it gets) and for an OpenTelemetry collector
(an OTLP/HTTP trace receiver)."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from aiosmtpd.controller import Controller

if TYPE_CHECKING:  # the OpenTelemetry packages are imported when a receiver starts
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

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


def query_sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    """The rows a query reads from a store's database (by its URL), on a connection of the
    test's own: a column the storage contract does not show (a job's `started_ms`)."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return conn.execute(statement).fetchall()
    with psycopg.connect(url) as pg:
        return pg.execute(statement.encode()).fetchall()


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


@dataclass(frozen=True)
class ReceivedSpan:
    """A span as an OTLP trace receiver decoded it: ids in lowercase hex, enums as words
    (`kind`: internal, server, client, producer or consumer; `status`: unset, ok or error),
    attribute values as Python values (lists for arrays, dicts for key-value lists)."""

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: str
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace_id, span_id) per link
    status: str
    status_message: str
    events: tuple[tuple[str, dict[str, Any]], ...]  # (name, attributes) per event
    resource: dict[str, Any]  # the resource's attributes: service.name, ...
    scope: str  # the instrumentation scope's name


# The specification reads an unspecified kind (0) as internal.
_KINDS = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUSES = {0: "unset", 1: "ok", 2: "error"}


def _value(value: AnyValue) -> Any:
    """An OTLP AnyValue as a Python value (None when it holds nothing)."""
    match value.WhichOneof("value"):
        case "array_value":
            return [_value(item) for item in value.array_value.values]
        case "kvlist_value":
            return _attributes(value.kvlist_value.values)
        case None:
            return None
        case field:
            return getattr(value, field)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _span(span: Span, resource: dict[str, Any], scope: str) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(), name=span.name,
        kind=_KINDS.get(span.kind, f"kind {span.kind}"), attributes=_attributes(span.attributes),
        links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
        status=_STATUSES.get(span.status.code, f"code {span.status.code}"),
        status_message=span.status.message,
        events=tuple((event.name, _attributes(event.attributes)) for event in span.events),
        resource=resource, scope=scope)


class TraceReceiver:
    """What an OTLP/HTTP trace receiver on loopback received. `url` is its base URL (for
    OTEL_EXPORTER_OTLP_ENDPOINT; exporters post to `<url>/v1/traces`), `requests` counts the
    POSTs to that path, and `answer` is the status it gives them: set 503 to have it refuse
    (a refused request stores nothing)."""

    def __init__(self, url: str = "") -> None:
        self.url = url
        self.requests = 0
        self.answer = 200
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()

    def spans(self) -> list[ReceivedSpan]:
        """The spans received so far, in the order they arrived."""
        with self._lock:
            return list(self._spans)

    def named(self, name: str) -> list[ReceivedSpan]:
        """The spans received so far with this name."""
        return [span for span in self.spans() if span.name == name]

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool],
                 timeout: float = 15.0) -> list[ReceivedSpan]:
        """The spans received, once `predicate` holds of them; AssertionError listing what
        arrived if it does not within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if time.monotonic() >= deadline:
                raise AssertionError(f"the spans awaited did not arrive in {timeout}s; "
                                     f"{self.requests} requests brought:\n{self.dump()}")
            time.sleep(0.02)

    def tree(self, trace_id: str) -> str:
        """A trace's spans as indented names, children under their parent (a span whose
        parent did not arrive is shown at the top level), for assertion messages."""
        spans = [span for span in self.spans() if span.trace_id == trace_id]
        ids = {span.span_id for span in spans}
        lines: list[str] = []

        def add(children: list[ReceivedSpan], depth: int) -> None:
            for span in children:
                lines.append(f"{'  ' * depth}{span.name} ({span.kind}, {span.status})")
                add([c for c in spans if c.parent_span_id == span.span_id], depth + 1)

        add([span for span in spans if span.parent_span_id not in ids], 0)
        return "\n".join(lines)

    def dump(self) -> str:
        """Every trace received, one `tree` after another (or a word when none came)."""
        traces = dict.fromkeys(span.trace_id for span in self.spans())
        return "\n".join(f"trace {trace_id}:\n{self.tree(trace_id)}"
                          for trace_id in traces) or "(no span)"

    def _count(self) -> None:
        with self._lock:
            self.requests += 1

    def _receive(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)


def _decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of an ExportTraceServiceRequest (ValueError if the body is not one)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as error:  # protobuf's DecodeError, typed nowhere here
        raise ValueError(f"not an ExportTraceServiceRequest: {error}") from error
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            spans += [_span(span, resource, scope_spans.scope.name)
                      for span in scope_spans.spans]
    return spans


@contextlib.contextmanager
def otlp_receiver() -> Iterator[TraceReceiver]:
    """A real OTLP/HTTP trace receiver on loopback (protobuf bodies, plain, gzip or deflate),
    standing in for an OpenTelemetry collector: `POST /v1/traces` answers `answer` (200 with
    an empty ExportTraceServiceResponse when it stores the spans), a body that is not an
    ExportTraceServiceRequest 400, a content type other than application/x-protobuf 415, any
    other path 404."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    receiver = TraceReceiver()
    accepted = ExportTraceServiceResponse().SerializeToString()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.partition("?")[0] != "/v1/traces":
                self._answer(404, b"not found", "text/plain")
                return
            receiver._count()
            status = receiver.answer
            content_type = self.headers.get("Content-Type", "").partition(";")[0].strip()
            if content_type != "application/x-protobuf":  # OTLP/JSON is not spoken here
                self._answer(415, b"application/x-protobuf only", "text/plain")
                return
            if status != 200:
                self._answer(status, b"refused", "text/plain")
                return
            try:
                match self.headers.get("Content-Encoding", "").strip().lower():
                    case "gzip":
                        body = gzip.decompress(body)
                    case "deflate":
                        body = zlib.decompress(body)
                spans = _decode(body)
            except (OSError, EOFError, zlib.error, ValueError) as error:
                self._answer(400, str(error).encode(), "text/plain")
                return
            receiver._receive(spans)
            self._answer(200, accepted, "application/x-protobuf")

        def do_GET(self) -> None:
            self._answer(404, b"not found", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    """The one span of `spans` named `name` (it is an error that there be none, or more)."""
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r}"
    return found[0]


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    """The spans of `spans` whose parent is `parent`."""
    return [s for s in spans if s.parent_span_id == parent.span_id
            and s.trace_id == parent.trace_id]


class Upstream:
    """A real HTTP server on loopback that answers every call (GET or POST) with `{}` and
    keeps the headers of each. `statuses` are answered first, one per call, in order (200
    after them); each answer waits `delay` seconds first."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.url = ""
        self.statuses: list[int] = []
        self.delay = 0.0


@contextlib.contextmanager
def upstream() -> Iterator[Upstream]:
    found = Upstream()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            found.headers.append({k.lower(): v for k, v in self.headers.items()})
            status = found.statuses.pop(0) if found.statuses else 200
            if found.delay:
                time.sleep(found.delay)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_POST

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    found.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
