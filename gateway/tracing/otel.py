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
from collections.abc import Mapping, Sequence
from contextvars import Token
from typing import Any

from opentelemetry.context import Context, attach, detach
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
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
        self.batch = BatchSpanProcessor(_CountingExporter(exporter, self.counts),
                                        max_queue_size=max_queue,
                                        max_export_batch_size=min(512, max_queue))
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

    def shutdown(self) -> None:
        self.batch.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.batch.force_flush(timeout_millis)


class Opened:
    """A span made current: ended, and its context put back, by `Tracing.close`."""

    __slots__ = ("span", "token")

    def __init__(self, span: Span, token: Token[Context] | None) -> None:
        self.span = span
        self.token = token

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


def remote(carrier: Mapping[str, str]) -> tuple[Context, SpanContext | None]:
    """The context a `traceparent` (and `tracestate`) continues, and its span, if valid."""
    context = _PROPAGATOR.extract(carrier)
    found = get_current_span(context).get_span_context()
    return context, found if found.is_valid else None


def _sampler(settings: Settings) -> Sampler | None:
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return None  # the SDK reads it (and OTEL_TRACES_SAMPLER_ARG)
    return ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio))


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
        self.provider = TracerProvider(resource=_resource(), sampler=_sampler(settings),
                                       span_limits=_limits())
        self.export = BoundedExport(exporter or OTLPSpanExporter(), settings.tracing_max_queue)
        self.provider.add_span_processor(self.export)
        self.counts = self.export.counts
        self.tracer = self.provider.get_tracer("workflow-gateway", __version__)
        trust = settings.tracing_trust_parent
        self.trust: bool | Networks = trust == "always" if isinstance(trust, str) else \
            Networks(trust)

    def close_all(self) -> None:
        """Send what waits, then stop (a process that ends; bounded by the exporter's
        timeout when the collector is down), and say what could not be sent."""
        self.provider.shutdown()
        counts = self.counts
        if counts.queue_full or counts.export_failed:
            log.warning("tracing: %d spans were dropped (export queue full: %d, refused or "
                        "missed by the collector: %d); %d were sent",
                        counts.queue_full + counts.export_failed, counts.queue_full,
                        counts.export_failed, counts.exported)

    # --- spans ---

    def open(self, name: str, values: Attributes, *, kind: SpanKind = SpanKind.INTERNAL,
             parent: Context | None = None, links: Sequence[Link] = (),
             current: bool = True) -> Opened:
        """A span started now, under `parent` (by default, the current span); made the
        current one unless `current` is false (a span with no children)."""
        span = self.tracer.start_span(name, parent, kind, attributes(values), links)
        return Opened(span, attach(set_span_in_context(span)) if current else None)

    def close(self, opened: Opened, values: Attributes | None = None, *,
              error: str | None = None, hidden: frozenset[str] = frozenset()) -> None:
        """End a span with `values` added and, when it failed, `error` as its status."""
        span = opened.span
        if opened.token is not None:
            detach(opened.token)
        if values:
            span.set_attributes(attributes(values, hidden))
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, redact(error, hidden) if hidden else error))
        span.end()

    def request(self, scope: Mapping[str, Any], route: str) -> Opened:
        """The server span of an HTTP request to a workflow (`route`), continuing the
        caller's trace only when `tracing.trust_parent` trusts the peer; otherwise the
        caller's span is a link of a new trace."""
        carrier = {name.decode(): value.decode("latin-1") for name, value in scope["headers"]
                   if name in (b"traceparent", b"tracestate")}
        client = scope.get("client")
        peer = client[0] if client else None
        parent = _ROOT
        links: tuple[Link, ...] = ()
        if carrier:
            context, caller = remote(carrier)
            if caller is not None:
                if self.trusts(peer):
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
        self.close(opened, {"http.response.status_code": status, "error.type": failed},
                   error=failed)

    def run(self, workflow: str, values: Attributes, *, job: bool,
            link: str | None) -> Opened:
        """A run's span: under the current span (a request's), or, for a job's run, the root
        of a trace of its own, linked to the run that scheduled it (`link`, the
        `traceparent` that run's span had)."""
        if not job:
            return self.open(f"run {workflow}", values)
        caller = remote({"traceparent": link})[1] if link else None
        return self.open(f"run {workflow}", values, parent=_ROOT,
                         links=(Link(caller, {"gateway.link": "scheduled_by"}),)
                         if caller is not None else ())

    def client(self, name: str, values: Attributes) -> Opened:
        """An outbound call's span (HTTP, SMTP, the database): no children."""
        return self.open(name, values, kind=SpanKind.CLIENT, current=False)

    def headers(self, opened: Opened) -> dict[str, str]:
        """The `traceparent` (and `tracestate`) an outbound HTTP call sends for its span."""
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, set_span_in_context(opened.span))
        return carrier

