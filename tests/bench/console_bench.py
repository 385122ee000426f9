"""Console benchmark: every console page's server time with 100,000 runs in the log.

    python tests/bench/console_bench.py [--runs 100000] [--span 7d] [--requests 50]
    GATEWAY_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python tests/bench/console_bench.py

Fills a fresh SQLite file (and, with GATEWAY_TEST_POSTGRES_URL, a fresh PostgreSQL database
of its own, dropped afterwards) with `--runs` runs of 12 workflows spread evenly over the
last `--span` (7 days: a busy gateway under the default 14-day retention; `--span 1d` puts
every run in the day the overview charts), written through the run log's own API, plus
1,000 jobs. Then signs in and requests each console page `--requests` times in-process
(the app called through ASGI, no network), and prints p50 and p99 against the target:
200 ms per page.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.api.auth import key_hash, new_key  # noqa: E402
from gateway.compiler.loader import load  # noqa: E402
from gateway.core.ids import new_id  # noqa: E402
from gateway.core.settings import parse_duration  # noqa: E402
from gateway.server.app import create_app  # noqa: E402
from gateway.storage import Job, Storage, open_storage  # noqa: E402

TARGET_MS = 200.0
WORKFLOWS = [f"workflow-{n:02}" for n in range(12)]
CHUNK = 5_000  # runs per flush: under the run log's queue limit (10,000)
STATUSES = ["success"] * 90 + ["failed"] * 7 + ["not_run"] * 2 + ["rejected"]
SOURCES = ["http"] * 8 + ["schedule", "trigger"]


def config(folder: Path) -> Path:
    docs = ["kind: settings\nconsole: {enabled: true}"]
    docs += [f"kind: api_workflow\nname: {name}\nexpose: true\nauth: none\nparams: "
             f"{{email: {{type: text}}}}\nsteps:\n  - action: return_data\n    data: {{}}"
             for name in WORKFLOWS]
    (folder / "main.yaml").write_text("\n---\n".join(docs))
    return folder


def a_run(n: int, at: datetime) -> dict[str, object]:
    status = random.choice(STATUSES)
    took = round(random.lognormvariate(1.0, 0.8), 3)
    steps = [{"id": f"step_{i}", "action": "set", "status": "success",
              "duration_ms": round(took / 4, 3)} for i in range(3)]
    if status == "failed":
        steps.append({"id": "charge", "action": "http_request", "status": "failed",
                      "reason": "the upstream answered 502", "duration_ms": took / 4})
    return {"id": new_id(at), "workflow": WORKFLOWS[n % len(WORKFLOWS)], "status": status,
            "source": random.choice(SOURCES), "started_at": at, "duration_ms": took,
            "identity": {"kind": "anonymous"},
            "params": {"email": f"lead{n}@example.com", "name": f"Lead {n}", "score": n},
            "result": {"id": f"r{n}"} if status == "success" else None,
            "error": {"code": "ERROR", "message": "step 4 (http_request) failed",
                      "location": "main.yaml:12"} if status == "failed" else None,
            "steps": steps}


async def fill(storage: Storage, runs: int, span: timedelta) -> None:
    now = datetime.now(UTC)
    started = time.perf_counter()
    for first in range(0, runs, CHUNK):
        for n in range(first, min(first + CHUNK, runs)):
            storage.runs.record_run(a_run(n, now - span * (1 - (n + 1) / runs)))
        await storage.runs.flush_runs()
    assert storage.runs.dropped == 0, "the run log dropped runs while filling"
    jobs = [Job(id=new_id(now), workflow=WORKFLOWS[n % 12], source="schedule",
                due_at=now + timedelta(minutes=n - 500), data={"params": {"n": n}})
            for n in range(1_000)]
    await storage.jobs.enqueue(jobs)
    print(f"  filled {runs:,} runs over {span} and 1,000 jobs in "
          f"{time.perf_counter() - started:.1f} s")


async def measure(url: str, folder: Path, runs: int, span: timedelta,
                  requests: int) -> list[tuple[str, float, float]]:
    storage = open_storage(url)
    app = create_app(load([folder]), storage, scheduler=False)
    async with app.router.lifespan_context(app):
        await fill(storage, runs, span)
        key = new_key()
        await storage.keys.create_key("bench", key_hash(key), datetime.now(UTC))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            form = await client.get("/console/sign-in")
            token = re.search(r'name="token" value="([^"]+)"', form.text)
            assert token is not None
            signed = await client.post("/console/sign-in",
                                       data={"key": key, "token": token.group(1)})
            assert signed.status_code == 303, signed.text
            return await time_pages(client, storage, requests)


async def time_pages(client: httpx.AsyncClient, storage: Storage,
                     requests: int) -> list[tuple[str, float, float]]:
    newest = (await storage.runs.list_runs(limit=1))[0]
    failed = (await storage.runs.list_runs(status="failed", limit=1))[0]
    middle = await client.get("/console/runs")
    older = re.search(r'href="/console/runs\?(before=[^"]+)" rel="next"', middle.text)
    assert older is not None
    job = (await storage.jobs.list_jobs(limit=1))[0]
    rare = int(newest["params"]["score"]) - 100  # a run of the last day, found by its e-mail
    searched = await client.get(f"/console/runs?text=lead{rare}@example")
    onward = re.search(r'href="/console/runs\?([^"]+)" rel="next"', searched.text)
    assert onward is not None, "the search read the whole log in one stretch"
    pages = [("overview", "/console"), ("workflows", "/console/workflows"),
             ("runs", "/console/runs"), ("runs, next page", f"/console/runs?"
                                         f"{older.group(1).replace('&amp;', '&')}"),
             ("runs, one workflow", f"/console/runs?workflow={WORKFLOWS[3]}"),
             ("runs, failed", "/console/runs?status=failed"),
             ("runs, failed in the last hour", "/console/runs?status=failed&since=1h"),
             ("runs, source=trigger", "/console/runs?source=trigger"),
             ("runs, text (one stretch)", f"/console/runs?text=lead{rare}@example"),
             ("runs, text, the next stretch", f"/console/runs?"
                                              f"{onward.group(1).replace('&amp;', '&')}"),
             ("runs, text found nowhere", "/console/runs?text=no-such-text-anywhere"),
             ("runs, refresh rows", "/console/runs/rows"),
             ("a run", f"/console/runs/{newest['id']}"),
             ("a failed run", f"/console/runs/{failed['id']}"),
             ("jobs", "/console/jobs"), ("jobs, pending", "/console/jobs?status=pending"),
             ("a job", f"/console/jobs/{job.id}")]
    results = []
    for name, path in pages:
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            answer = await client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, (path, answer.status_code)
        times.sort()
        p50 = statistics.median(times)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        results.append((name, p50, p99))
        print(f"  {name:<32} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  "
              f"{'PASS' if p99 < TARGET_MS else 'MISS'}")
    return results


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--span", default="7d")
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    span = parse_duration(args.span)
    random.seed(7)
    with tempfile.TemporaryDirectory() as tmp:
        folder = config(Path(tmp))
        print(f"sqlite ({args.runs:,} runs over {args.span}; target: every page under "
              f"{TARGET_MS:.0f} ms)")
        await measure(f"sqlite:///{tmp}/bench.db", folder, args.runs, span, args.requests)
        admin_url = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
        if not admin_url:
            print("postgresql: skipped (set GATEWAY_TEST_POSTGRES_URL)")
            return
        name = f"gateway_bench_console_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        try:
            print(f"postgresql ({args.runs:,} runs over {args.span})")
            await measure(with_database(admin_url, name), folder, args.runs, span,
                          args.requests)
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    asyncio.run(main())
