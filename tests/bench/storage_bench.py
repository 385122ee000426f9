"""Storage benchmark: durable creates/s at concurrency 64, and indexed search latency.

    python tests/bench/storage_bench.py [--records 100000]

Runs on a fresh SQLite file, and on a fresh PostgreSQL database when
GATEWAY_TEST_POSTGRES_URL is set. Searches are by an indexed field over all the records.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.storage import Constraint, FieldSpec, Storage, TypeSpec, open_storage  # noqa: E402

ITEM = TypeSpec(
    "item",
    {
        "code": FieldSpec("code", "text", unique=True),
        "group": FieldSpec("group", "integer", indexed=True),
        "title": FieldSpec("title", "text"),
    },
)
CONCURRENCY = 64


async def fill(storage: Storage, records: int) -> float:
    """Create `records` records from 64 concurrent tasks; returns creates per second."""
    counter = iter(range(records))

    async def worker() -> None:
        for i in counter:
            await storage.records.create(
                "item", {"code": f"c{i}", "group": i % 1000, "title": f"item number {i}"}
            )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return records / (time.perf_counter() - started)


async def search_latency(
    storage: Storage, records: int, key: str, rounds: int = 2000
) -> tuple[float, float]:
    timings = []
    for _ in range(rounds):
        i = random.randrange(records)
        value = f"c{i}" if key == "code" else i % 1000
        started = time.perf_counter()
        page = await storage.records.search("item", [Constraint(key, "equals", value)], limit=20)
        timings.append((time.perf_counter() - started) * 1000)
        assert page.results, f"nothing found for {key}={value}"
    quantiles = statistics.quantiles(timings, n=100)
    return quantiles[49], quantiles[98]


async def bench(url: str, records: int) -> None:
    storage = open_storage(url)
    await storage.open([ITEM])
    try:
        rate = await fill(storage, records)
        print(f"  creates/s at concurrency {CONCURRENCY}: {rate:,.0f}  ({records:,} records)")
        for key, what in (
            ("code", "unique text, 1 match"),
            ("group", "integer, ~%d matches" % (records // 1000)),
        ):
            p50, p99 = await search_latency(storage, records, key)
            print(f"  search {key} ({what}), limit 20: p50 {p50:.3f} ms  p99 {p99:.3f} ms")
    finally:
        await storage.close()


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    records = parser.parse_args().records
    with tempfile.TemporaryDirectory() as tmp:
        print("sqlite")
        await bench(f"sqlite:///{tmp}/bench.db", records)
    admin_url = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
    if not admin_url:
        print("postgresql: skipped (set GATEWAY_TEST_POSTGRES_URL)")
        return
    name = f"gateway_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        print("postgresql")
        await bench(with_database(admin_url, name), records)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    asyncio.run(main())
