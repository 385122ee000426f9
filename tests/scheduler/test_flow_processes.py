"""Flow control across processes, as it is deployed: `gateway serve` processes (each running
the scheduler, as it does by default) and `gateway worker` processes on one database and one
config, jobs scheduled over HTTP, and each job's run calling a real upstream on loopback
that counts, per key, the calls in flight at once: an overlap is seen where it would hurt.

Concurrency keys: 2,000 jobs on 20 keys under `limit: 1`, scheduled by 40 calls spread over
the serve processes, never run two of a key at once, with two serve and two worker
processes on PostgreSQL and one serve process on SQLite; each job runs once, and several
keys are in flight at once (the control: the upstream could see an overlap).

The harness (`Fleet`, `Upstream`) is `fleet_support`'s; throttle and debounce across
processes are `test_flow_rates`'s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fleet_support import SHAPES, Fleet, Upstream, backend, fleet_of, opened, until
from fleet_support import upstream_on_loopback as on_loopback

from gateway.storage import Job, Storage

KEYS = 20
CALLS = 40
PER_CALL = 50
JOBS = CALLS * PER_CALL

CONFIG = f"""
kind: settings
scheduler: {{poll: 200ms, lease: 30s}}
metrics: {{public: true}}
---
kind: api_workflow
name: sync
auth: admin
params:
  n: {{type: integer}}
  url: {{type: text}}
concurrency: {{key: "acct-{{{{ params.n % {KEYS} }}}}", limit: 1}}
steps:
  - action: http_request
    url: "{{{{ params.url }}}}/sync?n={{{{ params.n }}}}"
---
kind: api_workflow
name: plan-sync
auth: none
expose: true
params:
  ns: {{type: integer, list: true}}
  url: {{type: text}}
steps:
  - id: plan
    action: schedule_workflow_on_list
    workflow: sync
    list: "{{{{ params.ns }}}}"
    item_param: n
    params: {{url: "{{{{ params.url }}}}"}}
  - action: return_data
    data: {{scheduled: "{{{{ steps.plan.ids | length }}}}"}}
"""


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with on_loopback(hold=0.01, keys=KEYS) as found:
        yield found


@pytest.fixture
def fleet(storage_url: str, tmp_path: Path) -> Iterator[Fleet]:
    with fleet_of(CONFIG, storage_url, tmp_path) as started:
        yield started


@pytest.fixture
async def store(storage_url: str) -> AsyncIterator[Storage]:
    async with opened(storage_url) as storage:
        yield storage


async def schedule(urls: list[str], upstream: str) -> None:
    """`JOBS` jobs of `sync`, `PER_CALL` per call of `plan-sync`, the calls made at once and
    dealt round the serve processes."""
    async with httpx.AsyncClient(timeout=60) as client:
        answers = await asyncio.gather(*(
            client.post(f"{urls[call % len(urls)]}/api/1.1/wf/plan-sync", json={
                "ns": list(range(call * PER_CALL, (call + 1) * PER_CALL)), "url": upstream})
            for call in range(CALLS)))
    assert [a.status_code for a in answers] == [200] * CALLS, answers[0].text
    assert sum(int(a.json()["response"]["scheduled"]) for a in answers) == JOBS


async def all_done(store: Storage) -> bool:
    done = await store.jobs.list_jobs(workflow="sync", status="done", limit=JOBS + 1)
    return len(done) >= JOBS


async def ran_by_each(urls: list[str]) -> list[int]:
    """How many jobs the scheduler of each serve process ran (its `/metrics`)."""
    found = []
    async with httpx.AsyncClient(timeout=10) as client:
        for url in urls:
            lines = (await client.get(url + "/metrics")).text.splitlines()
            done = [line for line in lines if line.startswith('gateway_jobs{status="done"}')]
            found.append(int(float(done[0].split()[-1])) if done else 0)
    return found


async def test_limit_1_holds_for_2000_jobs_on_20_keys_across_processes(
        fleet: Fleet, store: Storage, storage_url: str, upstream: Upstream) -> None:
    serves, workers = SHAPES[backend(storage_url)]
    fleet.start(serves, workers)
    fleet.ready()
    began = time.monotonic()
    await schedule(fleet.urls, upstream.url)

    async def all_called() -> bool:
        return upstream.ended() >= JOBS

    await until(f"{JOBS} upstream calls", all_called, fleet, timeout=200)
    await until(f"{JOBS} jobs done", lambda: all_done(store), fleet, timeout=30)
    took = time.monotonic() - began
    shares = await ran_by_each(fleet.urls)
    figures = (f"{backend(storage_url)}, {serves} serve + {workers} worker processes: "
               f"{JOBS} jobs scheduled and run in {took:.1f} s ({JOBS / took:.0f} jobs/s), at most "
               f"{upstream.peak_all} calls in flight; run by the serves {shares}, the "
               f"workers {JOBS - sum(shares)}")
    print(figures)
    assert dict(upstream.peak) == dict.fromkeys(range(KEYS), 1), figures
    assert upstream.peak_all > 1, figures  # keys did run together: an overlap would show
    assert sorted(upstream.calls) == list(range(JOBS)), figures
    assert set(upstream.calls.values()) == {1}, figures
    check_jobs(await store.jobs.list_jobs(workflow="sync", limit=JOBS + 1))
    if workers:  # the processes raced for the keys: each serve and the workers ran some
        assert 0 not in shares and sum(shares) < JOBS, figures
    fleet.stopped_cleanly()


def check_jobs(jobs: list[Job]) -> None:
    """Every job done at its first claim, under its key (`limit: 1`)."""
    assert len(jobs) == JOBS
    assert {(j.status, j.attempt, j.claims) for j in jobs} == {("done", 1, 1)}
    keys = {j.flow_key: 0 for j in jobs}
    for job in jobs:
        assert (job.flow_key, job.flow_limit) == (
            f"sync:acct-{job.data['params']['n'] % KEYS}", 1)
        keys[job.flow_key] += 1
    assert set(keys.values()) == {JOBS // KEYS}
