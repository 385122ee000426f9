"""What the console asks of the run log and the jobs, on both backends: runs and jobs paged
by keyset, runs counted by minute and status, durations at the 50th and 99th percentile, and
each workflow's last run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.storage import Job, Storage
from gateway.storage.interface import RunStats

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def run(id: str, workflow: str, status: str, at: datetime, took: Any = 1.0,
        **extra: Any) -> dict[str, Any]:
    return {"id": id, "workflow": workflow, "status": status, "started_at": at,
            "duration_ms": took, "source": "http", "params": {}, **extra}


async def test_runs_are_paged_newest_first_without_skipping_ties(storage: Storage) -> None:
    # Five runs in the same microsecond and five later: ties are broken by id.
    for n in range(10):
        storage.runs.record_run(run(f"r{n}", "w", "success", T0 + timedelta(
            seconds=0 if n < 5 else n)))
    await storage.runs.flush_runs()
    seen: list[str] = []
    before = None
    while True:
        page = await storage.runs.page_runs(limit=3, before=before)
        if not page:
            break
        seen.extend(r["id"] for r in page)
        before = (page[-1]["started_at"], page[-1]["id"])
    assert seen == ["r9", "r8", "r7", "r6", "r5", "r4", "r3", "r2", "r1", "r0"]


async def test_a_page_of_runs_keeps_every_filter(storage: Storage) -> None:
    storage.runs.record_run(run("a", "one", "failed", T0, params={"email": "Ada@x"}))
    storage.runs.record_run(run("b", "one", "success", T0 + timedelta(seconds=1)))
    storage.runs.record_run(run("c", "two", "failed", T0 + timedelta(seconds=2),
                                source="scheduler"))
    await storage.runs.flush_runs()
    runs = storage.runs
    assert [r["id"] for r in await runs.page_runs(workflow="one")] == ["b", "a"]
    assert [r["id"] for r in await runs.page_runs(status="failed")] == ["c", "a"]
    assert [r["id"] for r in await runs.page_runs(source="scheduler")] == ["c"]
    assert [r["id"] for r in await runs.page_runs(text="ada@")] == ["a"]
    assert [r["id"] for r in await runs.page_runs(
        since=T0 + timedelta(seconds=1), until=T0 + timedelta(seconds=2))] == ["b"]
    assert [r["id"] for r in await runs.page_runs(
        status="failed", before=(T0 + timedelta(seconds=2), "c"))] == ["a"]


async def test_runs_are_counted_by_bucket_and_status(storage: Storage) -> None:
    for n, (second, status) in enumerate([(0, "success"), (30, "success"), (59, "failed"),
                                          (60, "success"), (150, "failed"), (300, "success")]):
        storage.runs.record_run(run(f"r{n}", "w", status, T0 + timedelta(seconds=second)))
    storage.runs.record_run(run("early", "w", "success", T0 - timedelta(seconds=1)))
    await storage.runs.flush_runs()
    counts = await storage.runs.count_runs(T0, T0 + timedelta(seconds=300), timedelta(minutes=1))
    assert sorted(counts) == [(0, "failed", 1), (0, "success", 2), (1, "success", 1),
                              (2, "failed", 1)]


async def test_run_stats_give_counts_and_nearest_rank_percentiles(storage: Storage) -> None:
    for n in range(1, 101):  # durations 1..100 ms: p50 is 50, p99 is 99
        storage.runs.record_run(run(f"a{n:03}", "alpha", "failed" if n % 10 == 0 else "success",
                                    T0 + timedelta(milliseconds=n), took=float(n)))
    storage.runs.record_run(run("b1", "beta", "success", T0, took=7))
    storage.runs.record_run(run("b2", "beta", "failed", T0, took="slow"))  # not timed
    storage.runs.record_run(run("old", "beta", "success", T0 - timedelta(days=2), took=1e9))
    await storage.runs.flush_runs()
    stats = await storage.runs.run_stats(T0 - timedelta(hours=1))
    assert stats == [RunStats("alpha", 100, 10, 50.0, 99.0), RunStats("beta", 2, 1, 7.0, 7.0)]
    assert await storage.runs.run_stats(T0 + timedelta(days=1)) == []


async def test_last_runs_name_each_workflows_latest_start(storage: Storage) -> None:
    storage.runs.record_run(run("a", "one", "success", T0))
    storage.runs.record_run(run("b", "one", "failed", T0 + timedelta(hours=1)))
    storage.runs.record_run(run("c", "two", "success", T0 - timedelta(days=3)))
    await storage.runs.flush_runs()
    assert await storage.runs.last_runs(["one", "two", "never", "it's"]) == {
        "one": T0 + timedelta(hours=1), "two": T0 - timedelta(days=3)}
    assert await storage.runs.last_runs([]) == {}


def job(id: str, due: datetime, workflow: str = "wf") -> Job:
    return Job(id=id, workflow=workflow, source="schedule", due_at=due,
               data={"params": {}, "identity": {"kind": "admin"}})


async def test_jobs_are_paged_latest_due_first(storage: Storage) -> None:
    await storage.jobs.enqueue([job(f"j{n}", T0 + timedelta(minutes=n // 2)) for n in range(7)])
    await storage.jobs.enqueue([job("other", T0, workflow="other")])
    seen: list[str] = []
    before = None
    while True:
        page = await storage.jobs.page_jobs(workflow="wf", limit=2, before=before)
        if not page:
            break
        seen.extend(j.id for j in page)
        before = (page[-1].due_at, page[-1].id)
    assert seen == ["j6", "j5", "j4", "j3", "j2", "j1", "j0"]
    assert len(await storage.jobs.page_jobs(status="pending", limit=100)) == 8
    assert await storage.jobs.page_jobs(status="failed") == []
