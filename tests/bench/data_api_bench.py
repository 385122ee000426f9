"""Data API benchmark: a search by an indexed field over 100,000 records, at one connection.

    python tests/bench/data_api_bench.py [--records 100000] [--rounds 2000]
    python tests/bench/data_api_bench.py --postgres postgresql://postgres@127.0.0.1:5432/postgres

Fills a fresh SQLite file (or a fresh PostgreSQL database `gateway_bench_data`, dropped
afterwards) through the storage API, starts `python -m gateway serve` on it, and times
`GET /api/1.1/obj/lead?constraints=[{email equals X}]` for random existing emails over one
keep-alive connection, with an admin key (no privacy rules) and anonymously (through the
type's privacy rules, pushed into the database). Target: p50 under 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.api.auth import key_hash, new_key  # noqa: E402
from gateway.compiler.loader import load  # noqa: E402
from gateway.storage import Storage, open_storage  # noqa: E402

CONFIG = """
kind: data_type
name: lead
api: {expose: true}
fields:
  email: {type: text, indexed: true}
  name: {type: text}
  score: {type: number}
everyone_else:
  find_in_searches: true
  view_fields: [email, name]
"""
CONCURRENCY = 64
TARGET_MS = 5.0


async def fill(url: str, config: Path, records: int) -> str:
    storage: Storage = open_storage(url)
    await storage.open(list(load([config]).data_types.values()))
    try:
        counter = iter(range(records))

        async def worker() -> None:
            for i in counter:
                await storage.records.create(
                    "lead", {"email": f"lead{i}@example.com", "name": f"Lead {i}", "score": i})

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        print(f"  filled {records:,} leads in {time.perf_counter() - started:.1f} s")
        key = new_key()
        await storage.keys.create_key("bench", key_hash(key), datetime.now(UTC))
        return key
    finally:
        await storage.close()


def serve(config: Path, url: str, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port),
         "--database", url, "--workers", "1"], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            try:
                if client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    return process
            except httpx.TransportError:
                time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not start")


def latency(port: int, records: int, rounds: int, headers: dict[str, str]) -> tuple[float, float]:
    timings = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
        for round in range(rounds + 100):  # the first 100 warm up
            email = f"lead{random.randrange(records)}@example.com"
            constraints = json.dumps([{"key": "email", "constraint_type": "equals",
                                       "value": email}])
            started = time.perf_counter()
            answer = client.get("/api/1.1/obj/lead", params={"constraints": constraints})
            elapsed = (time.perf_counter() - started) * 1000
            assert answer.status_code == 200, answer.text
            assert answer.json()["response"]["results"][0]["email"] == email
            if round >= 100:
                timings.append(elapsed)
    quantiles = statistics.quantiles(timings, n=100)
    return quantiles[49], quantiles[98]


def bench(url: str, records: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "lead.yaml"
        config.write_text(CONFIG)
        key = asyncio.run(fill(url, config, records))
        port = free_port()
        process = serve(config, url, port)
        try:
            for who, headers in (("admin key", {"Authorization": f"Bearer {key}"}),
                                 ("anonymous (privacy rules)", {})):
                p50, p99 = latency(port, records, rounds, headers)
                verdict = "PASS" if p50 < TARGET_MS else "MISS"
                print(f"  search by indexed email, {who}: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                      f"at 1 connection ({verdict}: p50 < {TARGET_MS:g} ms)")
        finally:
            process.terminate()
            process.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--postgres", default=os.environ.get("GATEWAY_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print("SQLite")
        bench(f"sqlite:///{Path(folder) / 'bench.db'}", args.records, args.rounds)
    if args.postgres:
        print("PostgreSQL")
        parts = urlsplit(args.postgres)
        name = "gateway_bench_data"
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {name}")
        try:
            bench(urlunsplit(parts._replace(path=f"/{name}")), args.records, args.rounds)
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
