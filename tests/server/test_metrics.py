"""`/metrics`: runs by workflow and status, run durations, HTTP responses by status class and
the run log's queue, in the Prometheus text format; admin only unless `metrics.public`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from conftest import Serve, served
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.auth import key_hash, new_key
from gateway.core.clock import utc_now
from gateway.server.metrics import Metrics

CONFIG = """\
kind: api_workflow
name: echo
expose: true
auth: none
params: {word: {type: text}}
steps:
  - action: fail
    only_when: "{{ params.word == 'boom' }}"
    status: 500
    code: BOOM
    message: boom
  - action: return_data
    data: {word: "{{ params.word }}"}
---
kind: api_workflow
name: quiet
expose: true
auth: admin
steps:
  - action: terminate
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def client_for(folder: Path, database: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with served(folder, database) as gateway:
        key = new_key()
        await gateway.storage.keys.create_key("metrics", key_hash(key), utc_now())
        yield gateway.client, key


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "main.yaml").write_text(CONFIG)
    return folder


@pytest.fixture
async def client(folder: Path, storage_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async for pair in client_for(folder, storage_url):
        yield pair


async def test_runs_durations_responses_and_queue_are_counted(
        client: tuple[httpx.AsyncClient, str]) -> None:
    http, key = client
    for word in ("a", "b", "c"):
        assert (await http.post("/api/1.1/wf/echo", json={"word": word})).status_code == 200
    assert (await http.post("/api/1.1/wf/echo", json={})).status_code == 400
    assert (await http.post("/api/1.1/wf/echo", json={"word": "boom"})).status_code == 500
    assert (await http.post("/api/1.1/wf/nothing")).status_code == 404
    response = await http.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = samples(response.text)
    echo = (("workflow", "echo"),)
    assert got[("gateway_runs_total", (("status", "success"), *echo))] == 3
    assert got[("gateway_runs_total", (("status", "rejected"), *echo))] == 1
    assert got[("gateway_runs_total", (("status", "failed"), *echo))] == 1
    assert got[("gateway_runs_total", (("status", "success"), ("workflow", "quiet")))] == 0
    assert got[("gateway_run_duration_seconds_count", echo)] == 5
    assert got[("gateway_run_duration_seconds_bucket", (("le", "+Inf"), *echo))] == 5
    assert got[("gateway_run_duration_seconds_sum", echo)] > 0
    assert got[("gateway_http_responses_total", (("class", "2xx"),))] == 3
    assert got[("gateway_http_responses_total", (("class", "4xx"),))] == 2
    assert got[("gateway_http_responses_total", (("class", "5xx"),))] == 1
    assert ("gateway_run_log_queue_depth", ()) in got
    assert got[("gateway_jobs", (("status", "running"),))] == 0  # the scheduler runs here


async def test_metrics_need_an_admin_key(client: tuple[httpx.AsyncClient, str]) -> None:
    http, _ = client
    anonymous = await http.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.json()["body"]["status"] == "UNAUTHORIZED"
    wrong = await http.get("/metrics", headers={"Authorization": "Bearer " + "x" * 43})
    assert wrong.status_code == 401


async def test_unknown_names_add_no_series(client: tuple[httpx.AsyncClient, str]) -> None:
    http, key = client
    for n in range(200):
        await http.post(f"/api/1.1/wf/made-up-{n}", json={})
    text = (await http.get("/metrics", headers={"Authorization": f"Bearer {key}"})).text
    assert "made-up" not in text
    assert len(text) < 20_000


async def test_public_and_disabled(folder: Path, tmp_path: Path) -> None:
    (folder / "settings.yaml").write_text("kind: settings\nmetrics: {public: true}\n")
    async for http, _ in client_for(folder, f"sqlite:///{tmp_path / 'a.db'}"):
        assert (await http.get("/metrics")).status_code == 200
    (folder / "settings.yaml").write_text("kind: settings\nmetrics: {enabled: false}\n")
    async for http, key in client_for(folder, f"sqlite:///{tmp_path / 'b.db'}"):
        off = await http.get("/metrics", headers={"Authorization": f"Bearer {key}"})
        assert off.status_code == 404 and off.json()["body"]["status"] == "NOT_FOUND"
        assert (await http.post("/api/1.1/wf/echo", json={"word": "x"})).status_code == 200


def test_the_scheduler_hook_reports_jobs() -> None:
    metrics = Metrics()
    metrics.jobs = lambda: ({"queued": 3, "failed": 1}, 2.5)
    got = samples(metrics.exposition().decode())
    assert got[("gateway_jobs", (("status", "queued"),))] == 3
    assert got[("gateway_jobs_due_lag_seconds", ())] == 2.5


def test_a_workflow_of_a_later_config_gets_counters() -> None:
    metrics = Metrics()
    metrics.bind(["a"])
    metrics.observe("r1", "a", "success", 3.0)
    metrics.observe("r2", "b", "not_run", 0.2)
    got = samples(metrics.exposition().decode())
    assert got[("gateway_runs_total", (("status", "not_run"), ("workflow", "b")))] == 1
    assert got[("gateway_run_duration_seconds_bucket", (("le", "0.0025"), ("workflow", "a")))] == 0
    assert got[("gateway_run_duration_seconds_bucket", (("le", "0.005"), ("workflow", "a")))] == 1


SCHEDULING = """\
kind: settings
scheduler: {poll: 100ms}
metrics: {public: true}
---
kind: api_workflow
name: later
auth: admin
params: {word: {type: text}}
steps:
  - action: fail
    only_when: "{{ params.word == 'boom' }}"
    message: boom
---
kind: api_workflow
name: plan
expose: true
auth: none
params: {word: {type: text}}
steps:
  - action: schedule_workflow
    workflow: later
    delay: 0
    params: {word: "{{ params.word }}"}
"""


async def test_jobs_the_scheduler_ran_are_reported(serve: Serve, storage_url: str) -> None:
    async with serve(SCHEDULING, storage_url) as gateway:
        http = gateway.client
        for word in ("fine", "boom"):
            assert (await http.post("/api/1.1/wf/plan", json={"word": word})).is_success
        deadline = utc_now() + timedelta(seconds=20)
        got: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while utc_now() < deadline:  # polling a condition, with a deadline
            got = samples((await http.get("/metrics")).text)
            if got.get(("gateway_jobs", (("status", "failed"),))) == 1 and got.get(
                    ("gateway_jobs", (("status", "done"),))) == 1:
                break
            await asyncio.sleep(0.05)
        assert got[("gateway_jobs", (("status", "done"),))] == 1, got
        assert got[("gateway_jobs", (("status", "failed"),))] == 1
        assert got[("gateway_jobs", (("status", "running"),))] == 0
        assert got[("gateway_jobs_due_lag_seconds", ())] >= 0


FLOW = """\
kind: settings
scheduler: {poll: 100ms}
metrics: {public: true}
---
kind: api_workflow
name: single
auth: admin
params: {word: {type: text}}
singleton: {key: "{{ params.word }}"}
steps: [{action: terminate}]
---
kind: api_workflow
name: settled
auth: admin
params: {word: {type: text}}
debounce: {key: "{{ params.word }}", period: 1h}
steps: [{action: terminate}]
---
kind: api_workflow
name: metered
auth: admin
params: {word: {type: text}}
throttle: {key: "{{ params.word }}", limit: 1, per: 1h}
steps: [{action: terminate}]
---
kind: api_workflow
name: plan
expose: true
auth: none
params: {word: {type: text}}
steps:
  - action: schedule_workflow
    workflow: single
    delay: 1h
    params: {word: "{{ params.word }}"}
  - action: schedule_workflow
    workflow: settled
    params: {word: "{{ params.word }}"}
  - action: schedule_workflow
    workflow: metered
    params: {word: "{{ params.word }}"}
"""


async def test_flow_control_skips_and_waits_are_reported(serve: Serve, storage_url: str) -> None:
    async with serve(FLOW, storage_url) as gateway:
        http = gateway.client

        def skipped(got: dict[tuple[str, tuple[tuple[str, str], ...]], float],
                    workflow: str, reason: str) -> float:
            return got.get(("gateway_jobs_flow_skipped_total",
                            (("reason", reason), ("workflow", workflow))), 0)

        before = samples((await http.get("/metrics")).text)  # the process's counts so far
        for _ in range(3):
            assert (await http.post("/api/1.1/wf/plan", json={"word": "w"})).is_success
        deadline = utc_now() + timedelta(seconds=20)
        got: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        waiting = ("gateway_jobs_flow_waiting", (("workflow", "metered"),))
        while utc_now() < deadline:  # polling a condition, with a deadline
            got = samples((await http.get("/metrics")).text)
            if got.get(waiting) == 2:
                break
            await asyncio.sleep(0.05)
        # The 2nd and 3rd singleton jobs were skipped, the 2nd and 3rd debounced ones were
        # written over the 1st; of three throttled jobs (1 an hour), one ran, two wait.
        assert skipped(got, "single", "singleton") - skipped(before, "single", "singleton") == 2
        assert skipped(got, "settled", "debounce") - skipped(before, "settled", "debounce") == 2
        assert got.get(waiting) == 2, got
