"""Tracing through the OpenTelemetry SDK: the spans the gateway makes, named and described
here in one place, and their export over OTLP/HTTP, bounded.

The exporter and the resource are configured by the standard environment variables
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`…), the rest by the settings
(`tracing:`). Finished spans wait for export in a queue of `tracing.max_queue` at most:
when the collector is down or slow, a span that finds it full is dropped and counted,
never queued without bound (`SpanCounts`, shown in `/metrics`).

Nothing a caller sends, a parameter, a header or a body, becomes an attribute, but a
parameter declared `trace: true`; every attribute and event text goes through the run
log's redaction (`attributes`).

A span that has children is made current (`Opened`, attached to the task's context) and
ended by the code that opened it, in the same task: the run's steps, and the outbound calls
of a step, find their parent there. Work a run hands on after its commit (an e-mail) keeps
the context it was handed on with.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from contextvars import Token
from typing import Any

from opentelemetry.context import Context, attach, detach
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import (
    Link,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.core.networks import Networks
from gateway.core.redaction import redact
from gateway.core.settings import Settings

log = logging.getLogger("gateway.tracing")
SERVICE_NAME = "workflow-gateway"
CLOSE_SECONDS = 3.0  # what a stopping process gives its last spans to be sent
ATTRIBUTE_LENGTH = 4096  # characters of an attribute's text kept (unless OTEL_* says)
_ROOT = Context()  # no parent: a span started in it begins a trace
_PROPAGATOR = TraceContextTextMapPropagator()
Attributes = Mapping[str, Any]


class SpanCounts:
    """Spans handed to the exporter and sent (`exported`), and dropped: because the queue
    was full (`queue_full`) or the collector refused or missed a batch (`export_failed`).
    Each count has one writer (the event loop, or the export thread)."""

    __slots__ = ("export_failed", "exported", "queue_full")

    def __init__(self) -> None:
        self.exported = 0
        self.queue_full = 0
        self.export_failed = 0

    def shown(self) -> tuple[int, dict[str, int]]:
        """Spans sent, and spans dropped by why, as `/metrics` shows them."""
        return self.exported, {"queue_full": self.queue_full,
                               "export_failed": self.export_failed}


class _CountingExporter(SpanExporter):
    def __init__(self, exporter: SpanExporter, counts: SpanCounts) -> None:
        self.exporter = exporter
        self.counts = counts

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.exporter.export(spans)
        except Exception:
            self.counts.export_failed += len(spans)
            raise
        if result is SpanExportResult.SUCCESS:
            self.counts.exported += len(spans)
        else:
            self.counts.export_failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class BoundedExport(SpanProcessor):
    """The SDK's batch processor, fed only while its queue has room: a span that finds it
    full is counted and dropped here (the batch processor would drop the oldest span
    instead, and log a warning for every one)."""

    def __init__(self, exporter: SpanExporter, max_queue: int) -> None:
        self.counts = SpanCounts()
        self.max_queue = max_queue
        batch = int(os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or 512)
        self.batch = BatchSpanProcessor(_CountingExporter(exporter, self.counts),
                                        max_queue_size=max_queue,
                                        max_export_batch_size=max(1, min(batch, max_queue)))
        # The queue the batch processor drains (its length is all that is read). Should a
        # release of the SDK hold it elsewhere, spans go to the batch processor unchecked,
        # which still bounds its queue; the tests of the bound would then fail.
        self._queue = getattr(getattr(self.batch, "_batch_processor", None), "_queue", None)

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        if self._queue is not None and len(self._queue) >= self.max_queue:
            self.counts.queue_full += 1
            return
        self.batch.on_end(span)

    def waiting(self) -> int:
        """Spans in the queue, not yet handed to the exporter."""
        return len(self._queue) if self._queue is not None else 0

    def shutdown(self) -> None:
        self.batch.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.batch.force_flush(timeout_millis)


class Opened:
    """A span, made current unless it has no children: ended, and the context it replaced
    put back, by `close`."""

    __slots__ = ("span", "token")

    def __init__(self, span: Span, token: Token[Context] | None) -> None:
        self.span = span
        self.token = token

    def close(self, values: Attributes | None = None, *, error: str | None = None,
              hidden: frozenset[str] = frozenset()) -> None:
        """End the span with `values` added and, when it failed, `error` (a fixed text or a
        code: never a caller's) as its status."""
        span = self.span
        if self.token is not None:
            detach(self.token)
            self.token = None
        if values and span.is_recording():
            span.set_attributes(attributes(values, hidden))
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, redact(error, hidden) if hidden else error))
        span.end()

    def traceparent(self) -> str | None:
        """The W3C `traceparent` of the span when it is sampled (what a job keeps to link
        its run to the run that scheduled it), else None."""
        context = self.span.get_span_context()
        if not context.is_valid or not context.trace_flags.sampled:
            return None
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def attributes(values: Attributes, hidden: frozenset[str] = frozenset()) -> dict[str, Any]:
    """`values` as span attributes: None left out; texts with the secrets of `hidden` cut
    out; lists and mappings as JSON, cut the same way."""
    found: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, str):
            found[key] = redact(value, hidden) if hidden else value
        elif isinstance(value, bool | int | float):
            found[key] = value
        else:
            found[key] = json.dumps(redact(value, hidden), default=str, ensure_ascii=False)
    return found


# W3C Trace Context, as read here before the SDK sees a header (whose parser logs what it
# refuses, as it came): a `traceparent` of version 00 (a later version's first four fields,
# as the standard says), and a `tracestate` of valid members only, 512 characters at most.
_TRACEPARENT = re.compile(r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}"
                          r"-[0-9a-f]{2}(?:-[\x21-\x7e]*)?")
_MEMBER = re.compile(r"(?:[a-z0-9][a-z0-9_*/-]{0,240}@)?[a-z][a-z0-9_*/-]{0,255}"
                     r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
MAX_TRACESTATE = 512


def remote(traceparent: object,
           tracestate: object = None) -> tuple[Context, SpanContext | None]:
    """The context a `traceparent` (and `tracestate`) continues, and its span; none for a
    header that is not valid."""
    if not isinstance(traceparent, str) or not _TRACEPARENT.fullmatch(traceparent) or \
            (traceparent.startswith("00") and len(traceparent) != 55):
        return _ROOT, None
    carrier = {"traceparent": traceparent[:55]}
    if isinstance(tracestate, str) and len(tracestate) <= MAX_TRACESTATE and all(
            _MEMBER.fullmatch(member.strip(" \t"))
            for member in tracestate.split(",") if member.strip(" \t")):
        carrier["tracestate"] = tracestate
    context = _PROPAGATOR.extract(carrier)
    found = get_current_span(context).get_span_context()
    return context, found if found.is_valid else None


def _sampler(settings: Settings) -> Sampler | None:
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return None  # the SDK reads it (and OTEL_TRACES_SAMPLER_ARG)
    ratio = settings.tracing_sample_ratio
    return ParentBased(ALWAYS_ON if ratio >= 1.0 else TraceIdRatioBased(ratio))


def _resource() -> Resource:
    named = os.environ.get("OTEL_SERVICE_NAME") or any(
        item.strip().startswith("service.name=")
        for item in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","))
    return Resource.create({"service.version": __version__,
                            **({} if named else {"service.name": SERVICE_NAME})})


def _limits() -> SpanLimits:
    if os.environ.get("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT") or \
            os.environ.get("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT"):
        return SpanLimits()
    return SpanLimits(max_span_attribute_length=ATTRIBUTE_LENGTH,
                      max_attribute_length=ATTRIBUTE_LENGTH)


class Tracing:
    """One process's tracer, the export of its spans, and the gateway's spans."""

    def __init__(self, settings: Settings, exporter: SpanExporter | None = None) -> None:
        sampler = _sampler(settings)
        self.parent_based = sampler is not None  # else the environment's: maybe not
        self.provider = TracerProvider(resource=_resource(), sampler=sampler,
                                       span_limits=_limits())
        self.exporter = exporter or OTLPSpanExporter()
        self.export = BoundedExport(self.exporter, settings.tracing_max_queue)
        self.provider.add_span_processor(self.export)
        self.counts = self.export.counts
        self.tracer = self.provider.get_tracer("workflow-gateway", __version__)
        trust = settings.tracing_trust_parent
        self.trust: bool | Networks = trust == "always" if isinstance(trust, str) else \
            Networks(trust)

    def close_all(self, seconds: float = CLOSE_SECONDS) -> None:
        """Send what waits, then stop, within `seconds` (a process that ends: a collector
        that is down does not hold it longer; what could not be sent then is dropped), and
        say what was dropped."""
        closing = threading.Thread(target=self.provider.shutdown, name="tracing-shutdown",
                                   daemon=True)
        closing.start()
        closing.join(seconds)
        counts = self.counts
        if closing.is_alive():  # the collector does not answer: its retries end now, and
            self.exporter.shutdown()  # what they held fails at once (and is counted)
            closing.join(1.0)
            counts.export_failed += self.export.waiting()
        if counts.queue_full or counts.export_failed:
            log.warning("tracing: %d spans were dropped (export queue full: %d, refused or "
                        "missed by the collector: %d); %d were sent",
                        counts.queue_full + counts.export_failed, counts.queue_full,
                        counts.export_failed, counts.exported)

    # --- spans ---

    def open(self, name: str, values: Attributes, *, kind: SpanKind = SpanKind.INTERNAL,
             parent: Context | None = None, links: Sequence[Link] = (),
             current: bool = True, hidden: frozenset[str] = frozenset()) -> Opened:
        """A span started now, under `parent` (by default, the current span); made the
        current one unless `current` is false (a span with no children). Under a current
        span that is not recorded, with the gateway's parent-based sampler, none is made:
        it would not be recorded either (the current one stands for it, and is what an
        outbound call's `traceparent` names)."""
        if parent is None and self.parent_based:
            here = get_current_span()
            if not here.is_recording() and here.get_span_context().is_valid:
                return Opened(here, None)
        span = self.tracer.start_span(name, parent, kind, None, links)
        if span.is_recording():  # an unsampled span: nothing to describe
            span.set_attributes(attributes(values, hidden))
        return Opened(span, attach(set_span_in_context(span)) if current else None)

    def request(self, scope: Mapping[str, Any], route: str) -> Opened:
        """The server span of an HTTP request to a workflow (`route`), continuing the
        caller's trace only when `tracing.trust_parent` trusts the peer; otherwise the
        caller's span is a link of a new trace."""
        carrier = {name.decode(): value.decode("latin-1") for name, value in scope["headers"]
                   if name in (b"traceparent", b"tracestate")}
        client = scope.get("client")
        peer = client[0] if client else None  # behind trusted proxies, the forwarded one
        parent = _ROOT
        links: tuple[Link, ...] = ()
        if "traceparent" in carrier:
            trusted = self.trusts(peer)
            # an untrusted caller's tracestate is not carried on
            context, caller = remote(carrier["traceparent"],
                                     carrier.get("tracestate") if trusted else None)
            if caller is not None:
                if trusted:
                    parent = context
                else:
                    links = (Link(caller, {"gateway.link": "caller"}),)
        method = scope["method"]
        return self.open(f"{method} {route}", {
            "http.request.method": method, "http.route": route, "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"), "client.address": peer,
            "network.protocol.version": scope.get("http_version"),
        }, kind=SpanKind.SERVER, parent=parent, links=links)

    def trusts(self, peer: str | None) -> bool:
        if isinstance(self.trust, bool):
            return self.trust
        return peer is not None and self.trust.trusts(peer)

    def responded(self, opened: Opened, status: int) -> None:
        failed = str(status) if status >= 500 else None
        opened.close({"http.response.status_code": status, "error.type": failed}, error=failed)

    def run(self, workflow: str, values: Attributes, *, job: bool,
            link: str | None) -> Opened:
        """A run's span: under the current span (a request's), or, for a job's run, the root
        of a trace of its own, linked to the run that scheduled it (`link`, the
        `traceparent` that run's span had)."""
        if not job:
            return self.open(f"run {workflow}", values)
        caller = remote(link)[1] if link else None
        return self.open(f"run {workflow}", values, parent=_ROOT,
                         links=(Link(caller, {"gateway.link": "scheduled_by"}),)
                         if caller is not None else ())

    def client(self, name: str, values: Attributes,
               hidden: frozenset[str] = frozenset()) -> Opened:
        """An outbound call's span (HTTP, SMTP, the database): no children."""
        return self.open(name, values, kind=SpanKind.CLIENT, current=False, hidden=hidden)

    def headers(self, opened: Opened) -> dict[str, str]:
        """The `traceparent` (and `tracestate`) an outbound HTTP call sends for its span."""
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, set_span_in_context(opened.span))
        return carrier

