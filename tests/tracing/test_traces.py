"""Traces as a tracing backend receives them: the gateway's spans sent over OTLP/HTTP to a
real receiver on loopback, decoded from their protobuf, on SQLite and PostgreSQL.

A webhook that schedules a job whose run calls an upstream is one chain: the request's
server span, its run and steps and commit under it; the job's run a trace of its own,
linked to the run that scheduled it, with its `http_request` a client span whose
`traceparent` the upstream receives. A caller's `traceparent` is continued only from the
peers the settings trust. No secret, and no parameter not declared `trace: true`, reaches a
span. With the receiver down or refusing, spans are dropped and counted, the queue bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Serve
from console_support import admin_key, serving, sign_in
from console_support import config as console_config
from support import (
    ReceivedSpan,
    TraceReceiver,
    Upstream,
    children,
    one,
    otlp_receiver,
    smtp_server,
    upstream,
)

from gateway.api.auth import key_hash
from gateway.cli.runs import timeline
from gateway.core.ids import new_id
from gateway.core.settings import Settings
from gateway.storage import Job, Storage
from gateway.storage.contract import PendingBound
from gateway.tracing.otel import Tracing

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
SECRET = "s3cr3t-value-that-must-not-leak"
ENV = {"API_SECRET": SECRET}

CONFIG = """
kind: settings
secrets: [API_SECRET]
tracing: {{enabled: true, trust_parent: {trust}}}
scheduler: {{poll: 50ms}}
smtp: {{host: 127.0.0.1, port: {smtp}, starttls: false, from: gateway@example.com}}
metrics: {{public: true}}
---
kind: data_type
name: order
api: {{expose: true}}
fields:
  ref: {{type: text}}
---
kind: api_workflow
name: hook
auth: none
expose: true
params:
  ref: {{type: text, trace: true}}
  card: {{type: text, optional: true}}
steps:
  - id: created
    action: create_thing
    type: order
    fields: {{ref: "{{{{ params.ref }}}}"}}
  - action: schedule_workflow
    workflow: call
    at: "{{{{ now }}}}"
    params: {{ref: "{{{{ params.ref }}}}"}}
  - action: return_data
    data: {{ok: true, order: "{{{{ steps.created._id }}}}"}}
---
kind: api_workflow
name: lookup
auth: none
expose: true
params:
  order: {{type: order, trace: true}}
  email: {{type: text}}
steps:
  - action: return_data
    data: {{ref: "{{{{ params.order.ref }}}}"}}
---
kind: api_workflow
name: relay
auth: none
expose: true
steps:
  - action: http_request
    method: POST
    url: "{upstream}/relay"
---
kind: api_workflow
name: call
auth: admin
params:
  ref: {{type: text}}
steps:
  - id: upstream
    action: http_request
    method: POST
    url: "{upstream}/orders?key={{{{ secrets.API_SECRET }}}}"
    headers: {{Authorization: "Bearer {{{{ secrets.API_SECRET }}}}"}}
    json: {{ref: "{{{{ params.ref }}}}"}}
  - action: send_email
    to: ["ada@example.com", "bob@example.com"]
    subject: "Order {{{{ params.ref }}}}"
    text: "It shipped."
---
kind: api_workflow
name: leaky
auth: none
expose: true
params:
  ref: {{type: text, trace: true}}
  card: {{type: text}}
  email: {{type: text, optional: true}}
steps:
  - action: fail
    only_when: "{{{{ params.ref != 'skip' }}}}"
    message: "refused {{{{ secrets.API_SECRET }}}}: {{{{ params.card }}}}, {{{{ params.email }}}}"
  - action: http_request
    url: "http://127.0.0.1:9/{{{{ params.email }}}}?card={{{{ params.card }}}}"
    on_error: continue
"""


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[TraceReceiver]:
    with otlp_receiver() as found:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", found.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        yield found


@pytest.fixture
def outside() -> Iterator[tuple[Upstream, int]]:
    with upstream() as up, smtp_server() as (_, port):
        yield up, port


def config(outside: tuple[Upstream, int], trust: str = "never") -> str:
    up, port = outside
    return CONFIG.format(trust=trust, smtp=port, upstream=up.url)


def chain_done(spans: list[ReceivedSpan]) -> bool:
    names = {s.name for s in spans}
    return {"POST /api/1.1/wf/hook", "run hook", "run call", "POST", "send_email"} <= names


async def arrived(receiver: TraceReceiver,
                  predicate: Callable[[list[ReceivedSpan]], bool]) -> list[ReceivedSpan]:
    """`receiver.wait_for`, polling without holding the event loop (the app runs on it)."""
    for _ in range(300):
        if predicate(receiver.spans()):
            break
        await asyncio.sleep(0.05)
    return await asyncio.to_thread(receiver.wait_for, predicate, 0.1)


async def wait_run(storage: Storage | None, workflow: str) -> dict[str, Any]:
    """The run log's row of the (latest) run of `workflow`, once it has one."""
    assert storage is not None
    for _ in range(300):
        await storage.runs.flush_runs()
        found = await storage.runs.list_runs(workflow=workflow)
        if found:
            run = await storage.runs.get_run(found[0]["id"])
            assert run is not None
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"no run of {workflow}")


async def test_a_webhook_its_job_and_the_job_s_upstream_call_are_one_linked_chain(
        serve: Serve, storage_url: str, receiver: TraceReceiver,
        outside: tuple[Upstream, int]) -> None:
    async with serve(config(outside), storage_url, environment=ENV) as gw:
        answer = await gw.client.post("/api/1.1/wf/hook", json={"ref": "A-1", "card": "4242"},
                                      headers={"traceparent": CALLER})
        assert answer.status_code == 200, answer.text
        spans = await arrived(receiver, chain_done)
        hook_run = await wait_run(gw.storage, "hook")
        call_run = await wait_run(gw.storage, "call")
    backend = "sqlite" if storage_url.startswith("sqlite") else "postgresql"

    # The request: a server span that starts a trace of its own (the caller is not
    # trusted), the caller's span kept as a link.
    server = one(spans, "POST /api/1.1/wf/hook")
    assert server.kind == "server" and server.parent_span_id == ""
    assert server.trace_id != CALLER_TRACE
    assert server.links == ((CALLER_TRACE, CALLER_SPAN),)
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/api/1.1/wf/hook"
    assert server.attributes["http.response.status_code"] == 200
    assert server.resource["service.name"] == "workflow-gateway"

    # Its run, and under the run each step and the commit (which wrote the job).
    run = one(spans, "run hook")
    assert run.parent_span_id == server.span_id and run.trace_id == server.trace_id
    assert run.attributes["gateway.run.status"] == "success"
    assert run.attributes["gateway.param.ref"] == "A-1"  # declared `trace: true`
    assert "gateway.param.card" not in run.attributes  # not declared: never
    under = children(spans, run)
    assert sorted(s.name for s in under) == [
        "COMMIT", "step 1 create_thing", "step 2 schedule_workflow", "step 3 return_data"]
    commit = one(under, "COMMIT")
    assert commit.kind == "client"
    assert commit.attributes["db.system.name"] == backend
    assert commit.attributes["gateway.db.changes"] == 1
    assert commit.attributes["gateway.db.jobs"] == 1
    step = one(under, "step 1 create_thing")
    assert step.attributes["gateway.step.status"] == "success"
    assert step.attributes["gateway.step.action"] == "create_thing"

    # The job's run: the root of another trace, linked to the run that scheduled it.
    job_run = one(spans, "run call")
    assert job_run.parent_span_id == "" and job_run.trace_id != run.trace_id
    assert job_run.links == ((run.trace_id, run.span_id),)
    assert job_run.attributes["gateway.run.source"] == "schedule"
    assert job_run.attributes["gateway.job.attempt"] == 1
    call_step = one(children(spans, job_run), "step 1 http_request")
    client = one(children(spans, call_step), "POST")
    assert client.kind == "client"
    assert client.attributes["http.response.status_code"] == 200
    assert client.attributes["url.full"] == f"{outside[0].url}/"  # no path, no query string
    assert client.attributes["server.address"] == "127.0.0.1"
    # The upstream received the client span as its parent.
    assert outside[0].headers[-1]["traceparent"].split("-")[1:3] == [
        client.trace_id, client.span_id]
    mail = one(spans, "send_email")
    assert mail.kind == "client" and mail.attributes["gateway.email.recipients"] == 2
    assert mail.trace_id == job_run.trace_id

    # The run log keeps each run's trace id; `gateway runs show` prints it.
    assert hook_run["trace_id"] == run.trace_id
    assert call_run["trace_id"] == job_run.trace_id
    assert f"trace     {run.trace_id}" in "\n".join(timeline(hook_run))


@pytest.mark.parametrize("trust", ["always", "[127.0.0.0/8]"])
async def test_a_trusted_caller_s_trace_is_continued(
        serve: Serve, storage_url: str, receiver: TraceReceiver,
        outside: tuple[Upstream, int], trust: str) -> None:
    async with serve(config(outside, trust), storage_url, environment=ENV) as gw:
        answer = await gw.client.post("/api/1.1/wf/hook", json={"ref": "A-2"},
                                      headers={"traceparent": CALLER})
        assert answer.status_code == 200
        spans = await arrived(receiver, lambda s: any(x.name == "run hook" for x in s))
    server = one(spans, "POST /api/1.1/wf/hook")
    assert (server.trace_id, server.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert server.links == ()


async def test_a_trusted_caller_s_decision_not_to_sample_is_kept_and_passed_on(
        serve: Serve, storage_url: str, receiver: TraceReceiver,
        outside: tuple[Upstream, int]) -> None:
    unsampled = f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"
    async with serve(config(outside, "always"), storage_url, environment=ENV) as gw:
        answer = await gw.client.post("/api/1.1/wf/relay", headers={"traceparent": unsampled})
        assert answer.status_code == 200, answer.text
        run = await wait_run(gw.storage, "relay")
        await gw.client.post("/api/1.1/wf/relay")  # a trace of its own: sent
        spans = await arrived(receiver, lambda s: any(x.name == "run relay" for x in s))
    assert "trace_id" not in run
    assert all(s.trace_id != CALLER_TRACE for s in spans)
    assert len([s for s in spans if s.name == "run relay"]) == 1
    # the upstream is told the caller's trace, unsampled, as the caller would expect
    first = outside[0].headers[0]["traceparent"].split("-")
    assert first[1] == CALLER_TRACE and first[3] == "00"


async def test_a_caller_outside_the_trusted_networks_starts_a_new_trace(
        serve: Serve, storage_url: str, receiver: TraceReceiver,
        outside: tuple[Upstream, int]) -> None:
    async with serve(config(outside, "[10.0.0.0/8]"), storage_url, environment=ENV) as gw:
        await gw.client.post("/api/1.1/wf/hook", json={"ref": "A-3"},
                             headers={"traceparent": CALLER})
        spans = await arrived(receiver, lambda s: any(x.name == "run hook" for x in s))
    server = one(spans, "POST /api/1.1/wf/hook")
    assert server.trace_id != CALLER_TRACE and server.parent_span_id == ""
    assert server.links == ((CALLER_TRACE, CALLER_SPAN),)


@pytest.mark.parametrize("header", [
    "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01",  # all-zero ids are invalid
    "ff-" + CALLER_TRACE + "-" + CALLER_SPAN + "-01",  # version ff is forbidden
    CALLER + "-" + "x" * 10_000, "00-" + "g" * 32 + "-" + CALLER_SPAN + "-01",
    "\u00e9" * 50])
async def test_a_malformed_traceparent_is_ignored(
        serve: Serve, storage_url: str, receiver: TraceReceiver,
        outside: tuple[Upstream, int], header: str) -> None:
    async with serve(config(outside, "always"), storage_url, environment=ENV) as gw:
        answer = await gw.client.post(
            "/api/1.1/wf/hook", json={"ref": "A-4"},
            headers=[(b"traceparent", header.encode("utf-8")),
                     (b"tracestate", ("k=v," * 2000).encode())])
        assert answer.status_code == 200
        spans = await arrived(receiver, lambda s: any(x.name == "run hook" for x in s))
    server = one(spans, "POST /api/1.1/wf/hook")
    assert server.parent_span_id == "" and server.links == ()
    assert server.trace_id not in (CALLER_TRACE, "0" * 32)


async def test_no_secret_and_no_undeclared_parameter_reaches_a_span(
        serve: Serve, storage_url: str, receiver: TraceReceiver,
        outside: tuple[Upstream, int], caplog: pytest.LogCaptureFixture) -> None:
    card, email = "4111111111111111", "eve@example.com"
    async with serve(config(outside), storage_url, environment=ENV) as gw:
        answer = await gw.client.post("/api/1.1/wf/leaky", json={
            "ref": f"R-{SECRET}", "card": card, "email": email})
        assert answer.status_code == 400 and card in answer.text  # the caller sees it
        skipped = await gw.client.post("/api/1.1/wf/leaky", json={
            "ref": "skip", "card": card, "email": email})
        assert skipped.status_code == 200
        made = await gw.client.post("/api/1.1/wf/hook", json={"ref": "A-5", "card": card})
        order = made.json()["response"]["order"]
        found = await gw.client.post("/api/1.1/wf/lookup", json={"order": order,
                                                                 "email": email})
        assert found.json()["response"] == {"ref": "A-5"}
        spans = await arrived(receiver, lambda s: chain_done(s) and any(
            x.name == "run lookup" for x in s) and len(
                [x for x in s if x.name == "run leaky"]) == 2)
    sent = json.dumps([[s.name, s.attributes, s.status_message, s.events, s.links, s.resource]
                       for s in spans])
    for hidden in (SECRET, card, email, "ada@example.com", "bob@example.com", "card="):
        assert hidden not in sent, hidden
    failed, passed = sorted((s for s in spans if s.name == "run leaky"),
                            key=lambda s: s.attributes["gateway.run.status"])
    assert failed.attributes["gateway.param.ref"] == "R-[redacted]"
    assert failed.attributes["error.type"] == "FAILED"
    assert failed.status == "error" and failed.status_message == "FAILED"
    step = one(children(spans, failed), "step 1 fail")
    assert step.attributes["gateway.step.status"] == "failed"
    assert step.attributes["error.type"] == "FAILED"
    assert "gateway.step.reason" not in step.attributes
    assert one(children(spans, passed), "step 1 fail").attributes["gateway.step.reason"] == \
        "only_when was false"
    ignored = one(children(spans, passed), "step 2 http_request")
    assert ignored.attributes["gateway.step.reason"] == "error ignored (on_error: continue)"
    refused = one(children(spans, ignored), "GET")
    assert refused.attributes["url.full"] == "http://127.0.0.1:9/"
    assert refused.attributes["error.type"] == "ConnectError"
    # a record parameter shows its id only
    assert one(spans, "run lookup").attributes["gateway.param.order"] == order
    assert not [r for r in caplog.records if card in r.getMessage()
                or email in r.getMessage() or SECRET in r.getMessage()]


async def test_a_caller_s_trace_headers_never_reach_the_log(
        serve: Serve, storage_url: str, receiver: TraceReceiver,
        outside: tuple[Upstream, int], caplog: pytest.LogCaptureFixture) -> None:
    injected = "caller-text=\u202e[fake] INFO admin logged in"
    async with serve(config(outside, "always"), storage_url, environment=ENV) as gw:
        for traceparent, tracestate in ((CALLER, injected), ("x" * 600, "a=b"),
                                        (CALLER, "k=" + "v" * 600)):
            answer = await gw.client.post(
                "/api/1.1/wf/leaky", json={"ref": "skip", "card": "1"},
                headers=[(b"traceparent", traceparent.encode()),
                         (b"tracestate", tracestate.encode())])
            assert answer.status_code == 200
        spans = await arrived(receiver, lambda s: len(
            [x for x in s if x.name == "run leaky"]) == 3)
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")], \
        [r.getMessage() for r in caplog.records]
    continued = [s for s in spans if s.name.startswith("POST") and s.trace_id == CALLER_TRACE]
    assert len(continued) == 2  # the caller's trace, its bad tracestate dropped


@pytest.mark.parametrize("trace", [None, 5, "garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01"])
async def test_a_job_without_a_valid_trace_runs_as_a_root_without_link(
        serve: Serve, storage_url: str, receiver: TraceReceiver,
        outside: tuple[Upstream, int], trace: object) -> None:
    async with serve(config(outside), storage_url, environment=ENV) as gw:
        assert gw.storage is not None
        now = datetime.now(UTC)
        await gw.storage.jobs.enqueue([Job(
            id=new_id(now), workflow="call", source="schedule", due_at=now, created_at=now,
            data={"params": {"ref": "B-1"}, "identity": {"kind": "admin"}, "depth": 0,
                  **({} if trace is None else {"trace": trace})})],
            PendingBound(None, None))
        spans = await arrived(receiver, lambda s: any(x.name == "run call" for x in s))
        run = await wait_run(gw.storage, "call")
    job_run = one(spans, "run call")
    assert job_run.parent_span_id == "" and job_run.links == ()
    assert run["status"] == "success" and run["trace_id"] == job_run.trace_id


async def test_a_cancelled_run_s_span_ends_cancelled(
        serve: Serve, storage_url: str, receiver: TraceReceiver,
        outside: tuple[Upstream, int]) -> None:
    with socket.socket() as silent:  # takes the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        text = config(outside) + f"""
---
kind: api_workflow
name: slow
auth: none
expose: true
steps:
  - action: http_request
    url: "http://127.0.0.1:{port}/"
"""
        async with serve(text, storage_url, environment=ENV) as gw:
            call = asyncio.create_task(gw.client.post("/api/1.1/wf/slow"))
            await arrived(receiver, lambda s: True)  # the app is up
            await asyncio.sleep(0.5)
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
            spans = await arrived(receiver, lambda s: any(x.name == "run slow" for x in s))
    run = one(spans, "run slow")
    assert run.attributes["gateway.run.status"] == "cancelled" and run.status == "error"
    step = one(children(spans, run), "step 1 http_request")
    assert step.attributes["error.type"] == "CancelledError"
    assert one(children(spans, step), "GET").attributes["error.type"] == "CancelledError"


def test_a_stopping_process_waits_a_bounded_time_for_a_collector_that_is_down(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with otlp_receiver() as closed:
        url = closed.url
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    tracing = Tracing(replace(Settings(), tracing_enabled=True, tracing_max_queue=100))
    for index in range(150):
        tracing.open(f"span {index}", {}).close()
    started = time.monotonic()
    tracing.close_all(seconds=1.0)
    took = time.monotonic() - started
    assert took < 10, took  # not the SDK's 30 s of retries
    counts = tracing.counts
    assert counts.exported == 0 and counts.queue_full == 50
    assert counts.export_failed == 100  # the rest: sent to no one, counted


async def test_spans_are_dropped_and_counted_when_the_collector_is_down(
        serve: Serve, storage_url: str, outside: tuple[Upstream, int],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with otlp_receiver() as closed:
        url = closed.url  # a port nothing listens on once the receiver is gone
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    text = config(outside).replace("tracing: {enabled: true",
                                   "tracing: {enabled: true, max_queue: 16")
    async with serve(text, storage_url, environment=ENV) as gw:
        tracing = gw.app.state.services.tracing
        assert tracing is not None
        longest = 0
        for index in range(60):
            answer = await gw.client.post("/api/1.1/wf/leaky",
                                          json={"ref": str(index), "card": "1"})
            assert answer.status_code == 400
            longest = max(longest, len(tracing.export._queue))
        metrics = (await gw.client.get("/metrics")).text
    assert longest <= 16  # never more than max_queue spans wait
    assert tracing.counts.queue_full > 0
    dropped = [line for line in metrics.splitlines()
               if line.startswith('gateway_trace_spans_dropped_total{reason="queue_full"}')]
    assert dropped and float(dropped[0].split()[-1]) > 0, metrics


async def test_spans_a_collector_refuses_are_counted_as_export_failed(
        serve: Serve, storage_url: str, receiver: TraceReceiver,
        outside: tuple[Upstream, int], monkeypatch: pytest.MonkeyPatch) -> None:
    receiver.answer = 400  # refused, not retried
    async with serve(config(outside), storage_url, environment=ENV) as gw:
        tracing = gw.app.state.services.tracing
        assert tracing is not None
        await gw.client.post("/api/1.1/wf/leaky", json={"ref": "1", "card": "1"})
        for _ in range(200):
            if tracing.counts.export_failed:
                break
            await asyncio.sleep(0.05)
        metrics = (await gw.client.get("/metrics")).text
    assert tracing.counts.export_failed >= 3 and tracing.counts.exported == 0
    assert 'gateway_trace_spans_dropped_total{reason="export_failed"}' in metrics
    assert receiver.spans() == []


async def test_with_tracing_off_nothing_is_sent_nor_kept(
        serve: Serve, storage_url: str, receiver: TraceReceiver,
        outside: tuple[Upstream, int]) -> None:
    text = config(outside).replace("tracing: {enabled: true", "tracing: {enabled: false")
    async with serve(text, storage_url, environment=ENV) as gw:
        assert gw.app.state.services.tracing is None
        await gw.client.post("/api/1.1/wf/hook", json={"ref": "C-1"},
                             headers={"traceparent": CALLER})
        call_run = await wait_run(gw.storage, "call")
        hook_run = await wait_run(gw.storage, "hook")
        assert gw.storage is not None
        jobs = await gw.storage.jobs.list_jobs(workflow="call")
        metrics = (await gw.client.get("/metrics")).text
    assert "trace_id" not in hook_run and "trace_id" not in call_run
    assert all("trace" not in job.data for job in jobs)
    assert "gateway_trace_spans" not in metrics
    assert "traceparent" not in outside[0].headers[-1]
    assert receiver.requests == 0


async def test_a_zero_sample_ratio_keeps_no_trace(
        serve: Serve, storage_url: str, receiver: TraceReceiver,
        outside: tuple[Upstream, int]) -> None:
    text = config(outside).replace("tracing: {enabled: true",
                                   "tracing: {enabled: true, sample_ratio: 0")
    async with serve(text, storage_url, environment=ENV) as gw:
        await gw.client.post("/api/1.1/wf/hook", json={"ref": "D-1"})
        call_run = await wait_run(gw.storage, "call")
        hook_run = await wait_run(gw.storage, "hook")
    assert "trace_id" not in hook_run and "trace_id" not in call_run
    assert receiver.spans() == []


async def test_a_data_api_call_is_a_run_span(
        serve: Serve, storage_url: str, receiver: TraceReceiver,
        outside: tuple[Upstream, int]) -> None:
    async with serve(config(outside), storage_url, environment=ENV) as gw:
        assert gw.storage is not None
        await gw.storage.keys.create_key("admin", key_hash("k" * 40), datetime.now(UTC))
        answer = await gw.client.post("/api/1.1/obj/order", json={"ref": "E-1"},
                                      headers={"Authorization": "Bearer " + "k" * 40})
        assert answer.status_code == 201, answer.text
        spans = await arrived(receiver, lambda s: any(x.name.startswith("run ") for x in s))
    run = [s for s in spans if s.name.startswith("run ")][0]
    assert run.attributes["gateway.run.source"] == "data_api"
    assert one(children(spans, run), "COMMIT").attributes["gateway.db.changes"] == 1


def test_gateway_runs_show_links_a_run_s_trace() -> None:
    run = {"id": "1x1", "workflow": "w", "status": "success", "duration_ms": 1.0,
           "started_at": datetime(2026, 1, 1), "params": {},
           "trace_id": CALLER_TRACE}
    lines = "\n".join(timeline(run, "http://localhost:16686/trace/{trace_id}"))
    assert f"trace     {CALLER_TRACE}  http://localhost:16686/trace/{CALLER_TRACE}" in lines
    forged = {**run, "trace_id": "<script>"}
    assert "trace " not in "\n".join(timeline(forged, "http://x/{trace_id}"))



async def test_the_console_s_run_page_links_the_run_s_trace(
        tmp_path: Path, storage_url: str, receiver: TraceReceiver) -> None:
    ui = "http://localhost:16686/trace/{trace_id}"
    folder = console_config(tmp_path, server=f'tracing: {{enabled: true, ui_url: "{ui}"}}')
    async with serving(folder, storage_url) as (client, storage):
        await sign_in(client, await admin_key(storage))
        answer = await client.post("/api/1.1/wf/create-lead", json={"email": "a@example.com"})
        run_id = answer.headers["x-run-id"]
        await storage.runs.flush_runs()
        run = await storage.runs.get_run(run_id)
        assert run is not None
        page = await client.get(f"/console/runs/{run_id}")
        spans = await arrived(receiver, lambda s: any(x.name == "run create-lead" for x in s))
    trace_id = one(spans, "run create-lead").trace_id
    assert run["trace_id"] == trace_id
    assert f'<a href="http://localhost:16686/trace/{trace_id}" rel="noopener noreferrer">' \
           f"<code>{trace_id}</code></a>" in page.text
