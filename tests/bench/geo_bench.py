"""Geographic search benchmark: `geographic_search` within 10 km among 100,000 records.

    python tests/bench/geo_bench.py [--records 100000] [--rounds 1000]

Records are spread evenly over a country-sized area (9 degrees of latitude by 13 of
longitude), so a 10 km search finds some 20 records and its box holds a few hundred. Runs on
a fresh SQLite file, and on a fresh PostgreSQL database when GATEWAY_TEST_POSTGRES_URL is
set; each search is checked against the haversine of every record, on a sample.
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

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storage_bench import CONCURRENCY, with_database  # noqa: E402

from gateway.storage import Constraint, FieldSpec, Storage, TypeSpec, open_storage  # noqa: E402
from gateway.storage.common.geo import Near, distance_km  # noqa: E402

PLACE = TypeSpec("place", {"name": FieldSpec("name", "text"),
                           "where": FieldSpec("where", "geographic_address")})
AREA = ((42.0, 51.0), (-5.0, 8.0))
RANGE_KM = 10.0


def points(records: int) -> list[tuple[float, float]]:
    rng = random.Random(1)
    (lat0, lat1), (lng0, lng1) = AREA
    return [(rng.uniform(lat0, lat1), rng.uniform(lng0, lng1)) for _ in range(records)]


async def fill(storage: Storage, where: list[tuple[float, float]]) -> float:
    counter = iter(enumerate(where))

    async def worker() -> None:
        for i, (lat, lng) in counter:
            await storage.records.create("place", {
                "name": f"p{i}", "where": {"address": f"{i} Main St", "lat": lat, "lng": lng}})

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return len(where) / (time.perf_counter() - started)


async def latency(storage: Storage, where: list[tuple[float, float]],
                  rounds: int) -> tuple[float, float, float]:
    rng = random.Random(2)
    timings, found = [], []
    for round in range(rounds):
        lat, lng = where[rng.randrange(len(where))]
        near = Constraint("where", "geographic_search", Near(RANGE_KM, lat, lng))
        started = time.perf_counter()
        page = await storage.records.search("place", [near], limit=20)
        timings.append((time.perf_counter() - started) * 1000)
        found.append(page.count)
        if round % 100 == 0:  # exact: the count is what the haversine says
            expected = sum(distance_km(lat, lng, a, b) <= RANGE_KM for a, b in where)
            assert page.count == expected, (page.count, expected)
    quantiles = statistics.quantiles(timings, n=100)
    return quantiles[49], quantiles[98], statistics.mean(found)


async def bench(url: str, records: int, rounds: int) -> None:
    storage = open_storage(url)
    await storage.open([PLACE])
    try:
        where = points(records)
        rate = await fill(storage, where)
        print(f"  filled {records:,} records at {rate:,.0f}/s")
        p50, p99, mean = await latency(storage, where, rounds)
        print(f"  geographic_search within {RANGE_KM:g} km, limit 20: p50 {p50:.2f} ms  "
              f"p99 {p99:.2f} ms  ({mean:.1f} matches on average)")
    finally:
        await storage.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("sqlite")
        await bench(f"sqlite:///{tmp}/bench.db", args.records, args.rounds)
    admin_url = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
    if not admin_url:
        print("postgresql: skipped (set GATEWAY_TEST_POSTGRES_URL)")
        return
    name = f"gateway_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        print("postgresql")
        await bench(with_database(admin_url, name), args.records, args.rounds)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    asyncio.run(main())
