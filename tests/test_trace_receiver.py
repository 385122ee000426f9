"""The OTLP/HTTP trace receiver of the test support, fed by the real OpenTelemetry SDK and its
OTLP/HTTP exporter (and by hand-made requests for what the SDK does not send): every field of
a span decodes, a refusing receiver stores nothing and the exporter sees the failure, and what
is not an OTLP trace export is turned away."""

from __future__ import annotations

import gzip

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from support import ReceivedSpan, TraceReceiver, otlp_receiver

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _provider(receiver: TraceReceiver, compression: Compression | None = None) -> TracerProvider:
    """A provider exporting each span as it ends to the receiver."""
    exporter = OTLPSpanExporter(endpoint=receiver.url + "/v1/traces", timeout=5,
                                compression=compression)
    provider = TracerProvider(resource=Resource.create({"service.name": "receiver-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _hex(context: SpanContext) -> tuple[str, str]:
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _one(receiver: TraceReceiver, name: str) -> ReceivedSpan:
    found = receiver.named(name)
    assert len(found) == 1, receiver.dump()
    return found[0]


def test_every_field_of_an_exported_span_decodes() -> None:
    with otlp_receiver() as receiver:
        provider = _provider(receiver)
        tracer = provider.get_tracer("tests.receiver")
        with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
            with tracer.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
                child.add_event("retry", {"attempt": 2, "why": "timeout"})
            tracer.start_span("internal").end()
        linked = tracer.start_span(
            "linked", kind=SpanKind.CONSUMER, links=[Link(parent.get_span_context())],
            attributes={"text": "a", "flag": True, "count": 7, "ratio": 0.25,
                        "names": ["x", "y"], "sizes": [1, 2], "flags": [True, False]})
        linked.set_status(Status(StatusCode.ERROR, "upstream said no"))
        linked.end()
        with tracer.start_as_current_span("sent", kind=SpanKind.PRODUCER) as sent:
            sent.set_status(Status(StatusCode.OK))
        provider.shutdown()

        spans = receiver.wait_for(lambda spans: len(spans) == 5)
        assert receiver.requests == 5  # a simple processor exports each span on its own
        trace_id, parent_id = _hex(parent.get_span_context())
        top, below = _one(receiver, "parent"), _one(receiver, "child")
        assert (top.trace_id, top.span_id, top.parent_span_id) == (trace_id, parent_id, "")
        assert (below.trace_id, below.span_id) == _hex(child.get_span_context())
        assert below.parent_span_id == parent_id
        assert _one(receiver, "internal").parent_span_id == parent_id
        assert [(s.name, s.kind) for s in spans] == [
            ("child", "client"), ("internal", "internal"), ("parent", "server"),
            ("linked", "consumer"), ("sent", "producer")]
        assert below.events == (("retry", {"attempt": 2, "why": "timeout"}),)
        assert (top.status, top.status_message, top.links, top.events) == ("unset", "", (), ())

        other = _one(receiver, "linked")
        assert other.trace_id != trace_id and other.parent_span_id == ""
        assert other.links == ((trace_id, parent_id),)
        assert other.attributes == {"text": "a", "flag": True, "count": 7, "ratio": 0.25,
                                    "names": ["x", "y"], "sizes": [1, 2],
                                    "flags": [True, False]}
        assert type(other.attributes["count"]) is int
        assert type(other.attributes["ratio"]) is float
        assert (other.status, other.status_message) == ("error", "upstream said no")
        assert _one(receiver, "sent").status == "ok"
        for span in spans:
            assert span.resource["service.name"] == "receiver-test"
            assert span.resource["telemetry.sdk.language"] == "python"
            assert span.scope == "tests.receiver"
            assert len(span.trace_id) == 32 and len(span.span_id) == 16
            assert span.trace_id == span.trace_id.lower()
            int(span.trace_id, 16), int(span.span_id, 16)

        assert receiver.tree(trace_id) == ("parent (server, unset)\n"
                                           "  child (client, unset)\n"
                                           "  internal (internal, unset)")


def test_gzip_bodies_from_the_exporter_decode() -> None:
    with otlp_receiver() as receiver:
        provider = _provider(receiver, Compression.Gzip)
        provider.get_tracer("tests.gzip").start_span("zipped", attributes={"n": 1}).end()
        provider.shutdown()
        [span] = receiver.wait_for(lambda spans: len(spans) == 1)
        assert (span.name, span.attributes, span.scope) == ("zipped", {"n": 1}, "tests.gzip")


def _request() -> ExportTraceServiceRequest:
    """A request the SDK would not make: values of every AnyValue type, bytes and key-value
    lists among them, and a span of unspecified kind."""
    values = {"raw": AnyValue(bytes_value=b"\x00\xff"),
              "nested": AnyValue(kvlist_value=KeyValueList(values=[
                  KeyValue(key="inner", value=AnyValue(array_value=ArrayValue(values=[
                      AnyValue(int_value=1), AnyValue(string_value="two"),
                      AnyValue(double_value=3.5)]))),
                  KeyValue(key="off", value=AnyValue(bool_value=False))])),
              "empty": AnyValue()}
    span = Span(trace_id=bytes(range(16)), span_id=bytes(range(8)), name="handmade",
                kind=Span.SpanKind.SPAN_KIND_UNSPECIFIED,
                attributes=[KeyValue(key=k, value=v) for k, v in values.items()],
                links=[Span.Link(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)])
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=ProtoResource(attributes=[KeyValue(key="service.name",
                                                    value=AnyValue(string_value="by-hand"))]),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name="hand"), spans=[span])])])


def test_every_value_type_decodes_and_the_answer_is_an_export_response() -> None:
    body = gzip.compress(_request().SerializeToString())
    with otlp_receiver() as receiver:
        answer = httpx.post(receiver.url + "/v1/traces", content=body,
                            headers={**PROTOBUF, "Content-Encoding": "gzip"})
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/x-protobuf"
        assert ExportTraceServiceResponse.FromString(answer.content) == (
            ExportTraceServiceResponse())
        [span] = receiver.spans()
    assert span == ReceivedSpan(
        trace_id="000102030405060708090a0b0c0d0e0f", span_id="0001020304050607",
        parent_span_id="", name="handmade", kind="internal",
        attributes={"raw": b"\x00\xff", "nested": {"inner": [1, "two", 3.5], "off": False},
                    "empty": None},
        links=(("01" * 16, "02" * 8),), status="unset", status_message="", events=(),
        resource={"service.name": "by-hand"}, scope="hand")


def test_a_refusing_receiver_stores_nothing_and_the_exporter_fails() -> None:
    with otlp_receiver() as receiver:
        receiver.answer = 503
        # The exporter retries a 503 with a backoff of about a second: a timeout of one
        # second leaves room for a retry at most.
        exporter = OTLPSpanExporter(endpoint=receiver.url + "/v1/traces", timeout=1)
        span = TracerProvider().get_tracer("tests.refused").start_span("refused")
        span.end()
        assert exporter.export([span]) is SpanExportResult.FAILURE  # type: ignore[list-item]
        assert receiver.requests >= 1 and receiver.spans() == []

        receiver.answer = 200  # the same span, accepted this time
        assert exporter.export([span]) is SpanExportResult.SUCCESS  # type: ignore[list-item]
        assert [s.name for s in receiver.spans()] == ["refused"]
        SimpleSpanProcessor(exporter).shutdown()  # closes the exporter's connections


def test_what_is_not_a_trace_export_is_turned_away() -> None:
    body = _request().SerializeToString()
    with otlp_receiver() as receiver:
        assert httpx.post(receiver.url + "/v1/metrics", content=body,
                          headers=PROTOBUF).status_code == 404
        assert httpx.get(receiver.url + "/v1/traces").status_code == 404
        assert receiver.requests == 0
        assert httpx.post(receiver.url + "/v1/traces", content=b"\xff\xff\xff",
                          headers=PROTOBUF).status_code == 400
        assert httpx.post(receiver.url + "/v1/traces", content=b"not gzip",
                          headers={**PROTOBUF, "Content-Encoding": "gzip"}).status_code == 400
        assert httpx.post(receiver.url + "/v1/traces", content=b"{}",
                          headers={"Content-Type": "application/json"}).status_code == 415
        assert receiver.requests == 3 and receiver.spans() == []
    with pytest.raises(httpx.ConnectError):  # shut down on leaving the block
        httpx.post(receiver.url + "/v1/traces", content=body, headers=PROTOBUF)


def test_waiting_in_vain_says_what_arrived() -> None:
    with otlp_receiver() as receiver:
        provider = _provider(receiver)
        tracer = provider.get_tracer("tests.wait")
        with tracer.start_as_current_span("outer"):
            tracer.start_span("inner").end()
        provider.shutdown()
        receiver.wait_for(lambda spans: len(spans) == 2)
        with pytest.raises(AssertionError) as failed:
            receiver.wait_for(lambda spans: bool(receiver.named("never")), timeout=0.2)
    message = str(failed.value)
    assert "2 requests" in message and "outer (internal, unset)\n  inner" in message
    with otlp_receiver() as empty:
        with pytest.raises(AssertionError, match="no span"):
            empty.wait_for(lambda spans: bool(spans), timeout=0.1)
