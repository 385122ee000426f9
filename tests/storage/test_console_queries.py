"""What the console asks of the run log and the jobs, on both backends: runs and jobs paged
by keyset, text searched a stretch at a time, runs counted by minute and status and their
durations at the 50th and 99th percentile (from the rollup kept as runs are written), a
job's own runs, and each workflow's last run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.storage import Job, Storage, open_storage
from gateway.storage.common import rollup
from gateway.storage.contract import RunStats

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
    assert [r["id"] for r in (await runs.search_runs("ada@"))[0]] == ["a"]
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
    # Counts are exact; percentiles are the middle of the histogram bucket the exact value
    # falls in: within 9%, and the same on both backends.
    assert [(s.workflow, s.runs, s.failed) for s in stats] == [("alpha", 100, 10),
                                                               ("beta", 2, 1)]
    assert [(s.p50_ms, s.p99_ms) for s in stats] == [
        (rollup.bucket_value(rollup.bucket(50)), rollup.bucket_value(rollup.bucket(99))),
        (rollup.bucket_value(rollup.bucket(7)), rollup.bucket_value(rollup.bucket(7)))]
    for got, exact in [(stats[0].p50_ms, 50), (stats[0].p99_ms, 99), (stats[1].p50_ms, 7)]:
        assert got is not None and abs(got - exact) / exact < 0.09
    assert await storage.runs.run_stats(T0 + timedelta(days=1)) == []


async def test_figures_come_from_the_rollup_not_from_the_runs(storage: Storage) -> None:
    # Runs deleted from the log (a trim) still count: the figures are what was written.
    for n in range(30):
        storage.runs.record_run(run(f"r{n:02}", "w", "success" if n % 3 else "failed",
                                    T0 + timedelta(seconds=n * 5), took=10.0))
    await storage.runs.flush_runs()
    assert await storage.runs.trim_runs(5, None) == 25
    counts = await storage.runs.count_runs(T0, T0 + timedelta(minutes=5), timedelta(minutes=1))
    assert sorted(counts) == [(0, "failed", 4), (0, "success", 8),
                              (1, "failed", 4), (1, "success", 8),
                              (2, "failed", 2), (2, "success", 4)]
    assert await storage.runs.run_stats(T0) == [
        RunStats("w", 30, 10, rollup.bucket_value(rollup.bucket(10)),
                 rollup.bucket_value(rollup.bucket(10)))]
    # A second batch adds to the same minute's row.
    storage.runs.record_run(run("late", "w", "failed", T0 + timedelta(seconds=1), took=10.0))
    await storage.runs.flush_runs()
    counts = await storage.runs.count_runs(T0, T0 + timedelta(minutes=1), timedelta(minutes=1))
    assert sorted(counts) == [(0, "failed", 5), (0, "success", 8)]


async def test_purging_keeps_two_days_of_rollup(storage: Storage) -> None:
    storage.runs.record_run(run("old", "w", "success", T0 - timedelta(days=3)))
    storage.runs.record_run(run("new", "w", "success", T0))
    await storage.runs.flush_runs()
    await storage.runs.purge_runs(T0, timedelta(days=30), timedelta(days=30))
    assert await storage.runs.get_run("old") is not None  # the runs' own retention holds
    assert await storage.runs.run_stats(T0 - timedelta(days=4)) == [
        RunStats("w", 1, 0, rollup.bucket_value(rollup.bucket(1.0)),
                 rollup.bucket_value(rollup.bucket(1.0)))]


async def test_text_search_reads_one_stretch_a_page(storage: Storage) -> None:
    # 25 runs; every fifth mentions "needle". A stretch of 7 runs holds one or two matches.
    for n in range(25):
        storage.runs.record_run(run(f"r{n:02}", "w", "success", T0 + timedelta(seconds=n),
                                    params={"note": "NEEDLE" if n % 5 == 0 else "hay"}))
    await storage.runs.flush_runs()
    found: list[str] = []
    reaches = []
    before = None
    for _ in range(10):
        page, reach = await storage.runs.search_runs("needle", before=before, limit=3, scan=7)
        found += [r["id"] for r in page]
        if len(page) == 3:
            before = (page[-1]["started_at"], page[-1]["id"])
        elif reach is None:
            break
        else:
            reaches.append(reach[1])
            before = reach
    assert found == ["r20", "r15", "r10", "r05", "r00"]
    assert reaches == ["r18", "r11", "r04"]  # the 7th run of each stretch
    page, reach = await storage.runs.search_runs("needle", limit=10)  # the default stretch
    assert [r["id"] for r in page] == ["r20", "r15", "r10", "r05", "r00"] and reach is None
    page, reach = await storage.runs.search_runs("needle", limit=2, scan=100)
    assert [r["id"] for r in page] == ["r20", "r15"] and reach is None  # a full page


async def test_text_search_keeps_every_filter(storage: Storage) -> None:
    storage.runs.record_run(run("a", "one", "failed", T0, params={"email": "Ada@x"}))
    storage.runs.record_run(run("b", "one", "success", T0 + timedelta(seconds=1),
                                params={"email": "ada@y"}))
    storage.runs.record_run(run("c", "two", "failed", T0 + timedelta(seconds=2),
                                params={"email": "ada@z"}, source="scheduler"))
    await storage.runs.flush_runs()

    async def ids(**filters: Any) -> list[str]:
        page, _ = await storage.runs.search_runs("ADA@", **filters)
        return [r["id"] for r in page]

    assert await ids() == ["c", "b", "a"]
    assert await ids(workflow="one") == ["b", "a"]
    assert await ids(status="failed") == ["c", "a"]
    assert await ids(source="scheduler") == ["c"]
    assert await ids(since=T0 + timedelta(seconds=1), until=T0 + timedelta(seconds=2)) == ["b"]
    assert await ids(before=(T0 + timedelta(seconds=2), "c")) == ["b", "a"]
    assert await ids(workflow="nothing") == []


@pytest.mark.parametrize("text", ["%", "a_b", "\\", "'; DROP TABLE gateway_runs; --", "é"])
async def test_text_search_takes_any_text_literally(storage: Storage, text: str) -> None:
    storage.runs.record_run(run("plain", "w", "success", T0, params={"note": "abc"}))
    storage.runs.record_run(run("holds", "w", "success", T0 + timedelta(seconds=1),
                                params={"note": f"x{text}y"}))
    await storage.runs.flush_runs()
    page, reach = await storage.runs.search_runs(text)
    assert [r["id"] for r in page] == ["holds"] and reach is None


async def test_text_search_for_a_nul_finds_nothing(storage: Storage) -> None:
    # The log never holds a NUL (it is replaced on the way in), so no run can match one.
    storage.runs.record_run(run("holds", "w", "success", T0, params={"note": "x\u0000y"}))
    await storage.runs.flush_runs()
    assert await storage.runs.search_runs("\u0000") == ([], None)
    assert await storage.runs.search_runs("x\u0000y") == ([], None)
    assert [r["id"] for r in (await storage.runs.search_runs("note"))[0]] == ["holds"]


async def test_a_jobs_runs_are_its_own(storage: Storage) -> None:
    for n, job_id in enumerate(["j1", "j2", "j1", None]):
        extra = {} if job_id is None else {"job": job_id, "attempt": n}
        storage.runs.record_run(run(f"r{n}", "w", "failed", T0 + timedelta(seconds=n),
                                    source="schedule", **extra))
    await storage.runs.flush_runs()
    assert [r["id"] for r in await storage.runs.page_runs(job="j1")] == ["r2", "r0"]
    assert [r["id"] for r in await storage.runs.page_runs(job="j2", workflow="w")] == ["r1"]
    assert await storage.runs.page_runs(job="j3") == []


async def test_the_rollup_migration_counts_an_older_log(storage: Storage) -> None:
    now = datetime.now(UTC)
    for n in range(6):
        storage.runs.record_run(run(f"r{n}", "w", "failed" if n == 5 else "success",
                                    now - timedelta(seconds=n), took=float(2 ** n)))
    storage.runs.record_run(run("untimed", "w", "success", now, took=None))
    storage.runs.record_run(run("gone", "w", "success", now - timedelta(days=3)))
    await storage.runs.flush_runs()
    expected = await storage.runs.run_stats(now - timedelta(hours=1))
    assert expected[0].runs == 7 and expected[0].failed == 1
    # The log as it was before the rollup: no rollup tables, the migration not applied.
    await _sql(storage, ["DROP TABLE gateway_run_minutes", "DROP TABLE gateway_run_durations",
                         "DELETE FROM gateway_migrations WHERE name = '0006_run_rollup'"])
    assert "0006_run_rollup" in await storage.migrate()
    assert await storage.runs.run_stats(now - timedelta(hours=1)) == expected
    assert await storage.runs.run_stats(now - timedelta(days=4)) == expected  # 2 days only


@pytest.mark.postgres
async def test_the_rollup_migration_cuts_periods_in_utc_in_any_session_zone(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A zone 5:45 ahead of UTC: cutting in it would put periods 5 minutes off the tally's.
    storage = open_storage(postgres_url)
    await storage.open()
    try:
        now = datetime.now(UTC)
        for n in range(30):
            storage.runs.record_run(run(f"r{n}", "w", "success", now - timedelta(minutes=n),
                                        took=1.0))
        await storage.runs.flush_runs()
        live = await _rows(storage)
        await _sql(storage, ["DELETE FROM gateway_run_minutes",
                             "DELETE FROM gateway_run_durations",
                             "DELETE FROM gateway_migrations WHERE name = '0006_run_rollup'",
                             "DROP TABLE gateway_run_minutes", "DROP TABLE gateway_run_durations"])
    finally:
        await storage.close()
    monkeypatch.setenv("PGTZ", "Asia/Kathmandu")
    again = open_storage(postgres_url)
    await again.open()  # migrates, in that session zone
    try:
        assert "0006_run_rollup" in again.migrations_applied
        assert await _rows(again) == live
    finally:
        await again.close()


async def _rows(storage: Storage) -> list[Any]:
    import psycopg
    async with await psycopg.AsyncConnection.connect(storage.url) as conn:
        minutes = await (await conn.execute(
            "SELECT extract(epoch FROM minute)::bigint, runs FROM gateway_run_minutes "
            "ORDER BY 1")).fetchall()
        periods = await (await conn.execute(
            "SELECT extract(epoch FROM period)::bigint, bucket, runs FROM gateway_run_durations"
            " ORDER BY 1, 2")).fetchall()
    return [minutes, periods]


async def _sql(storage: Storage, statements: list[str]) -> None:
    if storage.url.startswith("sqlite"):
        import sqlite3
        conn = sqlite3.connect(storage.url.removeprefix("sqlite:///"), isolation_level=None)
        for statement in statements:
            conn.execute(statement)
        conn.close()
        return
    import psycopg
    async with await psycopg.AsyncConnection.connect(storage.url, autocommit=True) as conn:
        for statement in statements:
            await conn.execute(statement.encode())


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
