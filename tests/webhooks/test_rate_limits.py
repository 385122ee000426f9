"""`rate_limit:` per workflow: 429 RATE_LIMITED with Retry-After past the limit, counted by
client address or by credential; in the process by default, in the database (shared by
instances) with `rate_limits: {shared: true}`, on both backends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from conftest import Served, served
from support import Clock

from gateway.api.auth import key_hash, new_key
from gateway.webhooks.guard import LocalRates

NOW = datetime(2026, 11, 25, 12, 0, 10, tzinfo=UTC)
CONFIG = """\
kind: api_workflow
name: limited
expose: true
auth: none
rate_limit: {requests: 2, per: 1m, by: BY}
steps:
  - action: terminate
---
kind: api_workflow
name: free
expose: true
auth: none
steps:
  - action: terminate
"""


@contextlib.asynccontextmanager
async def apps(tmp_path: Path, database: str, by: str = "ip", shared: bool = False,
               clock: Clock | None = None, count: int = 1,
               ) -> AsyncIterator[list[Served]]:
    """`count` gateway apps on one database (as instances would be)."""
    settings = f"kind: settings\nrate_limits: {{shared: {str(shared).lower()}}}\n---\n"
    config = settings + CONFIG.replace("BY", by)
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(
            served(config, database, home=tmp_path, clock=clock or Clock(NOW)))
            for _ in range(count)]


def client(app: Served, ip: str = "203.0.113.9") -> httpx.AsyncClient:
    return app.connect((ip, 1))


async def test_over_the_limit_is_429_with_retry_after(tmp_path: Path, storage_url: str) -> None:
    clock = Clock(NOW)
    async with apps(tmp_path, storage_url, clock=clock) as (gateway,):
        async with client(gateway) as caller:
            assert [(await caller.post("/api/1.1/wf/limited")).status_code
                    for _ in range(2)] == [200, 200]
            refused = await caller.post("/api/1.1/wf/limited")
            assert refused.status_code == 429
            body = refused.json()
            assert body == {"statusCode": 429, "body": {
                "status": "RATE_LIMITED", "message": body["body"]["message"]}}
            assert refused.headers["retry-after"] == "50"  # the window ends at 12:01:00
            assert (await caller.post("/api/1.1/wf/free")).status_code == 200
            clock.now = NOW + timedelta(seconds=50)  # the next window
            assert (await caller.post("/api/1.1/wf/limited")).status_code == 200


async def test_each_address_has_its_own_count(tmp_path: Path) -> None:
    async with apps(tmp_path, f"sqlite:///{tmp_path / 'g.db'}") as (gateway,):
        async with client(gateway, "203.0.113.1") as one:
            for _ in range(2):
                await one.post("/api/1.1/wf/limited")
            assert (await one.post("/api/1.1/wf/limited")).status_code == 429
        async with client(gateway, "203.0.113.2") as two:
            assert (await two.post("/api/1.1/wf/limited")).status_code == 200


async def test_by_key_counts_each_credential(tmp_path: Path, storage_url: str) -> None:
    async with apps(tmp_path, storage_url, by="key") as (gateway,):
        storage = gateway.storage
        keys = [new_key(), new_key()]
        for n, key in enumerate(keys):
            await storage.keys.create_key(f"k{n}", key_hash(key), NOW)
        async with client(gateway) as caller:
            first = {"Authorization": f"Bearer {keys[0]}"}
            for _ in range(2):
                assert (await caller.post("/api/1.1/wf/limited", headers=first)).status_code \
                    == 200
            assert (await caller.post("/api/1.1/wf/limited", headers=first)).status_code == 429
            second = {"Authorization": f"Bearer {keys[1]}"}
            assert (await caller.post("/api/1.1/wf/limited", headers=second)).status_code \
                == 200


async def test_counted_per_process_by_default(tmp_path: Path, storage_url: str) -> None:
    async with apps(tmp_path, storage_url, count=2) as (a, b):
        async with client(a) as one, client(b) as two:
            for caller in (one, two, one, two):
                assert (await caller.post("/api/1.1/wf/limited")).status_code == 200


async def test_shared_through_the_database(tmp_path: Path, storage_url: str) -> None:
    async with apps(tmp_path, storage_url, shared=True, count=2) as (a, b):
        async with client(a) as one, client(b) as two:
            assert (await one.post("/api/1.1/wf/limited")).status_code == 200
            assert (await two.post("/api/1.1/wf/limited")).status_code == 200
            assert (await one.post("/api/1.1/wf/limited")).status_code == 429
            assert (await two.post("/api/1.1/wf/limited")).status_code == 429
        storage = a.storage
        assert await storage.rates.purge_counters(NOW + timedelta(minutes=2)) == 1


async def test_the_process_counters_stay_bounded() -> None:
    rates = LocalRates(most=100)
    for n in range(1000):
        await rates.hit("w", f"ip:{n}", 1, NOW)
    assert len(rates.counters) <= 100
    assert await rates.hit("w", "ip:999", 1, NOW) == 2
