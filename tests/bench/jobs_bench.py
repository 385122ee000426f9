"""Jobs benchmark: throughput, start lag and memory of `gateway worker` processes.

    python tests/bench/jobs_bench.py [--jobs 10000] [--lag-jobs 1000] [--rate 100]
                                     [--keys N [--key-limit 1]]
    GATEWAY_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python tests/bench/jobs_bench.py

Throughput: `--jobs` jobs of a workflow that creates one record, all due at once, run by
one worker process on a fresh SQLite file, then (with PostgreSQL) by one and by two worker
processes on a fresh database. Jobs are enqueued while everything is paused, then resumed;
the clock runs from the resume until the last job is done.

Lag: `--lag-jobs` jobs due one after the other at `--rate` per second (below what a worker
runs, so the queue is not saturated), enqueued before any is due. A job's lag is the time
between when it was due (`run.scheduled_at`) and when its run started (the record it
creates holds both). Peak RSS is each worker's `VmHWM` at the end of a run.

With `--keys N`, every job of the throughput runs carries a concurrency key (`mark:<n mod
N>`, at most `--key-limit` running at once per key), as a workflow's `concurrency` gives
it: `--keys` as large as `--jobs` measures what keyed claiming costs when no key is full.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.compiler.loader import load  # noqa: E402
from gateway.core.ids import new_id  # noqa: E402
from gateway.storage import Job, Storage, open_storage  # noqa: E402

CONFIG = """\
kind: settings
scheduler: {concurrency: 64, poll: 1s}
run_log: {sample_success: 1}
---
kind: data_type
name: mark
fields:
  n: {type: integer}
  due: {type: date}
  started: {type: date}
---
kind: api_workflow
name: mark
auth: admin
params:
  n: {type: integer}
steps:
  - action: create_thing
    type: mark
    fields: {n: "{{ params.n }}", due: "{{ run.scheduled_at }}", started: "{{ now }}"}
"""


def job(n: int, due: datetime, keys: int = 0, key_limit: int = 1) -> Job:
    return Job(new_id(due), "mark", "schedule", due,
               data={"params": {"n": n}, "identity": {"kind": "admin", "user_id": None}},
               flow_key=f"mark:{n % keys}" if keys else None,
               flow_limit=key_limit if keys else None)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Workers:
    def __init__(self, config: Path, url: str, count: int) -> None:
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", "gateway", "worker", "--config", str(config),
             "--database", url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(count)]

    def peak_rss(self) -> list[float]:
        return [peak_rss_mib(p.pid) for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


async def done_count(storage: Storage) -> int:
    return (await storage.records.search("mark", limit=1)).count


async def wait_done(storage: Storage, total: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while await done_count(storage) < total:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {await done_count(storage)} of {total} jobs ran in time")
        await asyncio.sleep(0.05)


async def throughput(config: Path, url: str, workers: int, jobs: int, keys: int = 0,
                     key_limit: int = 1) -> dict[str, float]:
    storage = open_storage(url)
    await storage.open(list(load([config]).data_types.values()))
    try:
        await storage.jobs.pause(None, datetime.now(UTC))
        running = Workers(config, url, workers)
        now = datetime.now(UTC)
        for start in range(0, jobs, 10_000):
            await storage.jobs.enqueue([job(n, now, keys, key_limit)
                                        for n in range(start, min(start + 10_000, jobs))])
        await asyncio.sleep(2)  # let the workers start (they import, migrate, listen)
        started = time.perf_counter()
        await storage.jobs.resume(None)
        await wait_done(storage, jobs)
        elapsed = time.perf_counter() - started
        rss = running.peak_rss()
        running.stop()
        return {"jobs_per_s": jobs / elapsed, "seconds": elapsed, "peak_rss": max(rss)}
    finally:
        await storage.close()


async def lag(config: Path, url: str, jobs: int, rate: float) -> dict[str, float]:
    storage = open_storage(url)
    await storage.open(list(load([config]).data_types.values()))
    try:
        running = Workers(config, url, 1)
        await asyncio.sleep(2)
        first = datetime.now(UTC) + timedelta(seconds=2)
        await storage.jobs.enqueue([job(n, first + timedelta(seconds=n / rate))
                                    for n in range(jobs)])
        await wait_done(storage, jobs)
        rss = running.peak_rss()
        running.stop()
        found = (await storage.records.search("mark", limit=10_000)).results
        lags = sorted((m["started"] - m["due"]).total_seconds() * 1000 for m in found)
        return {"p50_ms": statistics.median(lags), "p99_ms": lags[int(len(lags) * 0.99) - 1],
                "max_ms": lags[-1], "peak_rss": max(rss)}
    finally:
        await storage.close()


def fresh_postgres(base: str) -> tuple[str, str]:
    name = f"gateway_jobs_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(base)
    return name, urlunsplit(parts._replace(path=f"/{name}"))


def drop_postgres(base: str, name: str) -> None:
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--lag-jobs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--keys", type=int, default=0,
                        help="concurrency keys over the throughput runs' jobs (0: none)")
    parser.add_argument("--key-limit", type=int, default=1)
    args = parser.parse_args()
    keyed = (args.keys, args.key_limit)
    load_text = f"{args.jobs} due at once" + (
        f", {args.keys} keys (limit {args.key_limit})" if args.keys else "")
    folder = Path(tempfile.mkdtemp(prefix="gateway-jobs-bench-"))
    config = folder / "workflows.d"
    config.mkdir()
    (config / "bench.yaml").write_text(CONFIG)
    rows = []

    def sqlite_url(tag: str) -> str:
        return f"sqlite:///{folder / f'{tag}.db'}"

    result = await throughput(config, sqlite_url("throughput"), 1, args.jobs, *keyed)
    rows.append(("SQLite", "1 worker", load_text, result))
    result = await lag(config, sqlite_url("lag"), args.lag_jobs, args.rate)
    rows.append(("SQLite", "1 worker", f"lag at {args.rate:g}/s", result))
    base = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
    if base:
        for workers in (1, 2):
            name, url = fresh_postgres(base)
            try:
                result = await throughput(config, url, workers, args.jobs, *keyed)
            finally:
                drop_postgres(base, name)
            rows.append(("PostgreSQL", f"{workers} worker(s)", load_text, result))
        name, url = fresh_postgres(base)
        try:
            result = await lag(config, url, args.lag_jobs, args.rate)
        finally:
            drop_postgres(base, name)
        rows.append(("PostgreSQL", "1 worker", f"lag at {args.rate:g}/s", result))
    print("| database | workers | load | result | peak RSS MiB (per worker) |")
    print("| --- | --- | --- | --- | --- |")
    for database, workers_text, load_text, figures in rows:
        if "jobs_per_s" in figures:
            shown = f"{figures['jobs_per_s']:,.0f} jobs/s ({figures['seconds']:.1f} s)"
        else:
            shown = (f"lag p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
                     f"max {figures['max_ms']:.1f} ms")
        print(f"| {database} | {workers_text} | {load_text} | {shown} | "
              f"{figures['peak_rss']:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
