"""HTTP calls to a workflow with `concurrency` or `throttle`, on SQLite and PostgreSQL: a
call whose key is full gets 429 `RATE_LIMITED` with `Retry-After` (the limit named, never
the key), or waits up to `max_wait`; other keys are not held back; calls and jobs of a key
count against one limit; a hold left by a process that died ends at its time; and hostile
params (a huge key, params that do not fit, a key that renders empty) get the answers
they would get without flow control.

The slow call waits at a real loopback server until the test lets it go: the overlap is
made, not hoped for."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import Serve
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.clock import utc_now
from gateway.storage.contract import CallKeys

CONFIG = """\
kind: settings
scheduler: {poll: 100ms}
metrics: {public: true}
secrets: [UPSTREAM]
---
kind: api_workflow
name: sync
expose: true
auth: none
params:
  account: {type: text}
  n: {type: integer, optional: true}
concurrency: {key: "{{ params.account }}", limit: 1}
steps:
  - action: http_request
    url: "{{ secrets.UPSTREAM }}/?account={{ params.account }}"
  - action: return_data
    data: {done: "{{ params.account }}"}
---
kind: api_workflow
name: patient
expose: true
auth: none
params:
  account: {type: text}
concurrency: {key: "{{ params.account }}", limit: 1, max_wait: 10s}
steps:
  - action: http_request
    url: "{{ secrets.UPSTREAM }}/?account={{ params.account }}"
---
kind: api_workflow
name: metered
expose: true
auth: none
params:
  account: {type: text}
throttle: {key: "{{ params.account }}", limit: 2, per: 1h}
steps:
  - action: return_data
    data: {done: "{{ params.account }}"}
---
kind: api_workflow
name: hourly
expose: true
auth: none
params:
  account: {type: text}
throttle: {key: "{{ params.account }}", limit: 1, per: 1h, max_wait: 30s}
steps: [{action: terminate}]
---
kind: api_workflow
name: keyless
expose: true
auth: none
params:
  account: {type: text, optional: true}
concurrency: {key: "{{ params.account or '' }}"}
steps: [{action: terminate}]
---
kind: api_workflow
name: plan
expose: true
auth: none
params:
  account: {type: text}
steps:
  - action: schedule_workflow
    workflow: metered
    params: {account: "{{ params.account }}"}
"""


class Gate:
    """A loopback server whose calls wait until `release` (and count those waiting)."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.waiting = 0
        self.lock = threading.Lock()

    def release(self) -> None:
        self.opened.set()


@pytest.fixture
def gate() -> Iterator[tuple[Gate, str]]:
    found = Gate()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            with found.lock:
                found.waiting += 1
            found.opened.wait(30)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield found, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        found.release()
        server.shutdown()
        server.server_close()


def refusals(text: str) -> float:
    """The calls to `metered` refused so far, as /metrics says."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_jobs_flow_skipped_total" and sample.labels == {
                    "workflow": "metered", "reason": "refused"}:
                return sample.value
    return 0


async def until_waiting(gate: Gate, count: int) -> None:
    async with asyncio.timeout(20):
        while gate.waiting < count:
            await asyncio.sleep(0.01)


async def test_a_full_concurrency_key_gets_429_with_retry_after_and_others_go_on(
        serve: Serve, storage_url: str, gate: tuple[Gate, str]) -> None:
    upstream, url = gate
    async with serve(CONFIG, storage_url, environment={"UPSTREAM": url}) as gateway:
        http = gateway.client
        first = asyncio.create_task(http.post("/api/1.1/wf/sync", json={"account": "a"}))
        await until_waiting(upstream, 1)
        refused = await http.post("/api/1.1/wf/sync", json={"account": "a"})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        body = refused.json()
        assert body["statusCode"] == 429 and body["body"]["status"] == "RATE_LIMITED", body
        assert "at most 1 at once (concurrency)" in body["body"]["message"]
        assert "'a'" not in body["body"]["message"]  # the key is the caller's: not said
        other = asyncio.create_task(http.post("/api/1.1/wf/sync", json={"account": "b"}))
        await until_waiting(upstream, 2)  # another key runs beside the first
        upstream.release()
        assert (await first).json()["response"] == {"done": "a"}
        assert (await other).json()["response"] == {"done": "b"}
        again = await http.post("/api/1.1/wf/sync", json={"account": "a"})  # room again
        assert again.status_code == 200, again.text


async def test_max_wait_waits_for_room_instead(
        serve: Serve, storage_url: str, gate: tuple[Gate, str]) -> None:
    upstream, url = gate
    async with serve(CONFIG, storage_url, environment={"UPSTREAM": url}) as gateway:
        http = gateway.client
        first = asyncio.create_task(http.post("/api/1.1/wf/patient", json={"account": "a"}))
        await until_waiting(upstream, 1)
        second = asyncio.create_task(http.post("/api/1.1/wf/patient", json={"account": "a"}))
        await asyncio.sleep(0.6)
        assert upstream.waiting == 1 and not second.done()  # waits, not run, not refused
        upstream.release()
        assert (await first).status_code == 200
        assert (await second).status_code == 200
        assert upstream.waiting == 2


async def test_a_throttle_refuses_past_its_limit_until_its_period_ends(
        serve: Serve, storage_url: str) -> None:
    async with serve(CONFIG, storage_url) as gateway:
        http = gateway.client
        for _ in range(2):
            assert (await http.post("/api/1.1/wf/metered", json={"account": "a"})).is_success
        before = refusals((await http.get("/metrics")).text)
        refused = await http.post("/api/1.1/wf/metered", json={"account": "a"})
        assert refused.status_code == 429
        assert refusals((await http.get("/metrics")).text) == before + 1
        assert 3590 <= int(refused.headers["retry-after"]) <= 3600
        assert "at most 2 starts per 3600 s (throttle)" in refused.json()["body"]["message"]
        assert (await http.post("/api/1.1/wf/metered", json={"account": "b"})).is_success


async def test_calls_and_jobs_of_a_key_count_against_one_limit(
        serve: Serve, storage_url: str) -> None:
    async with serve(CONFIG, storage_url) as gateway:
        http = gateway.client
        for _ in range(2):
            assert (await http.post("/api/1.1/wf/metered", json={"account": "a"})).is_success
        assert (await http.post("/api/1.1/wf/plan", json={"account": "a"})).is_success
        assert (await http.post("/api/1.1/wf/plan", json={"account": "b"})).is_success
        jobs = gateway.storage.jobs
        async with asyncio.timeout(20):  # b's job runs; a's waits for the throttle
            while len(await jobs.list_jobs(workflow="metered", status="done")) < 1:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        [waiting] = await jobs.list_jobs(workflow="metered", status="pending")
        assert waiting.data["params"] == {"account": "a"}
        use = await jobs.key_use(utc_now(), [], [("metered:a", 3_600_000)])
        assert use == ({}, {"metered:a": 2}, frozenset())


async def test_a_hold_left_by_a_dead_process_ends_at_its_time(
        serve: Serve, storage_url: str, gate: tuple[Gate, str]) -> None:
    upstream, url = gate
    upstream.release()
    async with serve(CONFIG, storage_url, environment={"UPSTREAM": url}) as gateway:
        now = utc_now()
        keys = CallKeys("sync", flow_key="sync:a", flow_limit=1)
        jobs = gateway.storage.jobs
        # A call admitted by a process that died: its hold lasts its time, then no longer.
        assert await jobs.admit_call("dead", keys, now, now + timedelta(seconds=1)) is None
        assert await jobs.admit_call("other", keys, now, now + timedelta(seconds=1)) == 1.0
        assert (await gateway.client.post("/api/1.1/wf/sync",
                                          json={"account": "a"})).status_code == 429
        await asyncio.sleep(1.1)
        assert (await gateway.client.post("/api/1.1/wf/sync",
                                          json={"account": "a"})).status_code == 200


async def test_hostile_params_get_the_answers_they_would_without_flow_control(
        serve: Serve, storage_url: str, gate: tuple[Gate, str]) -> None:
    upstream, url = gate
    upstream.release()
    async with serve(CONFIG, storage_url, environment={"UPSTREAM": url}) as gateway:
        http = gateway.client
        huge = await http.post("/api/1.1/wf/keyless", json={"account": "x" * 100_000})
        assert huge.status_code == 200, huge.text[:200]  # its key cut and hashed
        unfit = await http.post("/api/1.1/wf/sync", json={"account": "a", "n": "many"})
        assert unfit.status_code == 400, unfit.text
        missing = await http.post("/api/1.1/wf/sync", json={})
        assert missing.status_code == 400, missing.text
        empty = await http.post("/api/1.1/wf/keyless", json={})
        assert empty.status_code == 400
        assert empty.json()["body"]["status"] == "INVALID_DATA"
        assert "concurrency key of 'keyless' is empty" in empty.json()["body"]["message"]


async def test_a_throttle_that_opens_after_max_wait_refuses_at_once(
        serve: Serve, storage_url: str) -> None:
    async with serve(CONFIG, storage_url) as gateway:
        http = gateway.client
        assert (await http.post("/api/1.1/wf/hourly", json={"account": "a"})).is_success
        started = time.monotonic()
        refused = await http.post("/api/1.1/wf/hourly", json={"account": "a"})
        assert refused.status_code == 429
        assert time.monotonic() - started < 5  # not the 30 s max_wait: waiting is no use
        assert int(refused.headers["retry-after"]) > 3500
