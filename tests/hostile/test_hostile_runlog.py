"""What no caller can do to the run log, on both backends: stop it with one value it cannot
store (a NUL byte, an integer too large for text, a lone surrogate, deep nesting), grow it
without bound while the database is down or slow, fill the disk, or have a short secret
blank out every matching character."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import served

from gateway.core.clock import utc_now
from gateway.core.settings import Settings
from gateway.storage import RunLogLimits, Storage, open_storage
from gateway.storage.retention import purge_runs_once, trim_due
from gateway.storage.sqlite.connector import path_from_url

CONFIG = """
kind: settings
secrets: [SHORT, TINY, LONG]
{run_log}
---
kind: api_workflow
name: order-paid
expose: true
auth: none
params:
  status: {{type: text}}
steps:
  - action: return_data
    data: {{status: "{{{{ params.status }}}}"}}
---
kind: api_workflow
name: tenfold
expose: true
auth: none
params:
  n: {{type: integer}}
steps:
  - action: return_data
    data: {{n: "{{{{ params.n * 10 }}}}"}}
---
kind: api_workflow
name: keep
expose: true
auth: none
params:
  o: {{type: object}}
steps:
  - action: return_data
    data: {{kept: true}}
---
kind: api_workflow
name: refuse
expose: true
auth: none
params:
  status: {{type: text}}
steps:
  - action: fail
    status: 422
    code: REFUSED
    message: "refused: {{{{ params.status }}}}"
---
kind: api_workflow
name: negative
expose: true
auth: none
steps:
  - action: fail
    status: 422
    code: NEGATIVE_AMOUNT
    message: "an amount cannot be negative"
"""
SECRETS = {"SHORT": "e", "TINY": "abc", "LONG": "sekrit-1234"}


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, url: str, run_log: str = "") -> AsyncIterator[
        tuple[httpx.AsyncClient, Storage]]:
    config = CONFIG.format(run_log=run_log)
    async with served(config, url, home=tmp_path, environment=SECRETS) as served_app:
        yield served_app.client, served_app.storage


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[Storage]:
    storage = open_storage(url)
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


async def logged(storage: Storage, response: httpx.Response) -> dict[str, Any]:
    await storage.runs.flush_runs()
    run = await storage.runs.get_run(response.headers["x-run-id"])
    assert run is not None, "the run is not in the run log"
    return run


def a_run(number: int, **fields: Any) -> dict[str, Any]:
    started = datetime(2024, 5, 1, tzinfo=UTC) + timedelta(seconds=number)
    return {"id": f"run-{number:03d}", "workflow": "w", "status": "success",
            "started_at": started, "params": {"n": number}, **fields}


async def stored_ids(storage: Storage) -> set[str]:
    return {run["id"] for run in await storage.runs.list_runs(limit=10_000)}


def execute(url: str, sql: str) -> None:
    """One statement on a connection of the test's own, as an operator would run it."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(path_from_url(url))) as conn:
            conn.execute(sql)
            conn.commit()
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.encode())


def refuse(url: str, condition: str) -> None:
    """Make the database itself refuse run rows that match `condition` (SQL on `data`)."""
    if url.startswith("sqlite"):
        execute(url, f"CREATE TRIGGER refuse BEFORE INSERT ON gateway_runs WHEN {condition} "
                     "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    else:
        condition = condition.replace("NEW.data", "data::text").replace("NEW.", "")
        execute(url, f"ALTER TABLE gateway_runs ADD CONSTRAINT refuse CHECK (NOT ({condition}))")


@contextlib.contextmanager
def held(url: str) -> Iterator[None]:
    """The run log's table locked by another session: nothing can be written until the end
    of the block (a database that is down, as far as the run log can tell)."""
    if url.startswith("sqlite"):
        sqlite_conn = sqlite3.connect(path_from_url(url), isolation_level=None)
        sqlite_conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            sqlite_conn.execute("ROLLBACK")
            sqlite_conn.close()
        return
    with psycopg.connect(url) as conn:
        conn.execute(b"LOCK TABLE gateway_runs IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()


# --- item 1: one value the database refuses ----------------------------------------------


async def test_a_nul_byte_is_stored_as_a_replacement_character_and_later_runs_still_written(
        tmp_path: Path, storage_url: str) -> None:
    async with gateway(tmp_path, storage_url) as (client, storage):
        poisoned = await client.post("/api/1.1/wf/order-paid", json={"status": "paid\u0000"})
        later = [await client.post("/api/1.1/wf/order-paid", json={"status": f"paid {i}"})
                 for i in range(20)]
        run = await logged(storage, poisoned)
        assert run["params"] == {"status": "paid\ufffd"}
        assert run["result"] == {"status": "paid\ufffd"}
        for response in later:
            assert (await logged(storage, response))["status"] == "success"
        assert storage.runs.dropped == 0


async def test_a_refused_run_in_a_batch_is_kept_as_its_summary_and_the_others_written(
        storage_url: str) -> None:
    async with opened(storage_url) as storage:
        refuse(storage_url, "NEW.data LIKE '%poison%'")
        for number in range(50):
            storage.runs.record_run(a_run(number, result="poison" if number == 17 else None))
        await storage.runs.flush_runs()
        assert await stored_ids(storage) == {f"run-{n:03d}" for n in range(50)}
        summary = await storage.runs.get_run("run-017")
        assert summary is not None and summary["error"]["code"] == "RUN_LOG"
        assert "poison" not in str(summary) and summary["status"] == "success"
        assert (storage.runs.summarised, storage.runs.dropped) == (1, 0)


async def test_a_run_refused_even_as_its_summary_is_dropped_and_counted(
        storage_url: str) -> None:
    async with opened(storage_url) as storage:
        refuse(storage_url, "NEW.workflow = 'poisoned'")
        for number in range(30):
            run = a_run(number, workflow="poisoned" if number in (3, 21) else "w")
            storage.runs.record_run(run)
        await storage.runs.flush_runs()
        expected = {f"run-{n:03d}" for n in range(30)} - {"run-003", "run-021"}
        assert await stored_ids(storage) == expected
        assert storage.runs.dropped == 2


async def test_runs_larger_together_than_one_statement_holds_are_all_written(
        storage_url: str) -> None:
    """18 runs of 15 MB each, every one under the limits, 270 MB together: more than one
    JSON document of PostgreSQL's holds (256 MiB). They go in smaller statements, and the
    runs after them are written too, rather than the batch being retried for ever."""
    async with opened(storage_url) as storage:
        for number in range(18):
            storage.runs.record_run(a_run(number, result="x" * 15_000_000))
        for number in range(18, 30):
            storage.runs.record_run(a_run(number))
        async with asyncio.timeout(120):  # waiting for: every run written
            await storage.runs.flush_runs()
        assert await stored_ids(storage) == {f"run-{n:03d}" for n in range(30)}
        assert (storage.runs.summarised, storage.runs.dropped) == (0, 0)


# --- item 1: a database that is down or slow -----------------------------------------------


async def test_the_queue_is_bounded_while_the_database_is_down(storage_url: str) -> None:
    async with opened(storage_url) as storage:
        storage.runs.configure(RunLogLimits(max_queue=10))
        with held(storage_url):
            for number in range(30):  # nothing awaited: nothing written meanwhile
                storage.runs.record_run(a_run(number))
            assert storage.runs.dropped == 20
        await storage.runs.flush_runs()
        assert await stored_ids(storage) == {f"run-{n:03d}" for n in range(10)}


async def test_a_shutdown_with_the_database_down_ends_and_counts_what_it_lost(
        storage_url: str) -> None:
    storage = open_storage(storage_url)
    await storage.open()
    storage.runs.configure(RunLogLimits(max_queue=10, flush_seconds=0.5))
    with held(storage_url):
        for number in range(30):
            storage.runs.record_run(a_run(number))
        async with asyncio.timeout(60):  # waiting for: the store to close with the log stuck
            await storage.close()
    assert storage.runs.dropped == 30


# --- item 12: values no JSON encoder takes -------------------------------------------------


async def test_a_4300_digit_integer_parameter_is_a_400_and_its_run_is_recorded(
        tmp_path: Path, storage_url: str) -> None:
    async with gateway(tmp_path, storage_url) as (client, storage):
        response = await client.post("/api/1.1/wf/tenfold", data={"n": "9" * 4300})
        assert (response.status_code, response.json()["body"]["status"]) == (
            400, "INVALID_DATA")
        run = await logged(storage, response)
        assert run["status"] == "rejected" and len(run["params"]["n"]) < 300


@pytest.mark.parametrize("value, kept", [
    (10**5000, "<integer of 5001 digits>"),
    (-(10**4300), "<integer of 4301 digits>"),
    (10**400, "<integer of 401 digits>"),  # would be stored, but could not be read back
    ("lone \udcff surrogate", "lone \\udcff surrogate"),
], ids=["5001-digits", "4301-digits", "401-digits", "lone-surrogate"])
async def test_a_run_holding_a_value_json_cannot_hold_is_recorded_with_a_marker(
        storage_url: str, value: Any, kept: Any) -> None:
    async with opened(storage_url) as storage:
        storage.runs.record_run(a_run(1, result={"value": value}))
        for number in range(2, 12):
            storage.runs.record_run(a_run(number))
        await storage.runs.flush_runs()
        run = await storage.runs.get_run("run-001")
        assert run is not None and run["result"] == {"value": kept}
        assert len(await stored_ids(storage)) == 11


async def test_a_parameter_nested_a_thousand_levels_deep_is_recorded(
        tmp_path: Path, storage_url: str) -> None:
    deep = '{"o": {"a": ' + "[" * 1000 + "]" * 1000 + "}}"
    async with gateway(tmp_path, storage_url) as (client, storage):
        response = await client.post("/api/1.1/wf/keep", content=deep.encode())
        assert response.status_code == 200
        run = await logged(storage, response)
    assert run["status"] == "success" and "nested deeper than" in str(run["params"])


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# --- item 13: short secrets ------------------------------------------------------------------


async def test_a_secret_shorter_than_four_characters_is_not_searched_for_in_text(
        tmp_path: Path, storage_url: str) -> None:
    text = "the cheese abc was sekrit-1234"
    async with gateway(tmp_path, storage_url) as (client, storage):
        response = await client.post("/api/1.1/wf/order-paid", json={"status": text})
        run = await logged(storage, response)
    assert run["params"]["status"] == "the cheese abc was [redacted]"


# --- item 16: size --------------------------------------------------------------------------


async def test_sample_success_keeps_no_successful_run_but_every_other(
        tmp_path: Path, storage_url: str) -> None:
    run_log = "run_log: {sample_success: 0}"
    async with gateway(tmp_path, storage_url, run_log) as (client, storage):
        ok = await client.post("/api/1.1/wf/order-paid", json={"status": "paid"})
        rejected = await client.post("/api/1.1/wf/order-paid", json={})
        failed = await client.post("/api/1.1/wf/negative")
        await storage.runs.flush_runs()
        assert await storage.runs.get_run(ok.headers["x-run-id"]) is None
        assert (await logged(storage, rejected))["status"] == "rejected"
        assert (await logged(storage, failed))["status"] == "failed"


async def test_max_rows_keeps_only_the_newest_runs(storage_url: str) -> None:
    async with opened(storage_url) as storage:
        for number in range(40):
            storage.runs.record_run(a_run(number, status="failed" if number % 3 else "success"))
        await storage.runs.flush_runs()
        settings = Settings(run_log_max_rows=15)
        assert await purge_runs_once(storage.runs, settings, _in_2024) == 25
        assert await stored_ids(storage) == {f"run-{n:03d}" for n in range(25, 40)}


async def test_max_bytes_keeps_the_newest_runs_that_fit(storage_url: str) -> None:
    async with opened(storage_url) as storage:
        for number in range(40):
            # incompressible, so that PostgreSQL stores each document at about the same size
            storage.runs.record_run(a_run(number, result=random.Random(number).randbytes(
                1000).hex()))
        await storage.runs.flush_runs()
        size = await storage.runs.run_size()
        assert 1000 < size < 4000
        settings = Settings(run_log_max_bytes=size * 8 + size // 2)
        assert await purge_runs_once(storage.runs, settings, _in_2024) == 32
        assert await stored_ids(storage) == {f"run-{n:03d}" for n in range(32, 40)}


def _in_2024() -> datetime:
    return min(utc_now(), datetime(2024, 5, 2, tzinfo=UTC))


# --- issue 22, item 6: a run-log row keeps a bounded size; the log's size is bounded -------


MOST = 16_384  # run_log.max_value_bytes, by default


def json_size(value: Any) -> int:
    return len(json.dumps(value, default=str, separators=(",", ":")).encode())


async def test_a_large_parameter_is_cut_in_the_stored_run_with_a_marker(
        tmp_path: Path, storage_url: str) -> None:
    """900 KB parameters made 511 MB of run log in 10 s: each value a run keeps (parameters,
    result, error, steps) is cut to `run_log.max_value_bytes`, and says what was cut."""
    big = "x" * 900_000
    async with gateway(tmp_path, storage_url) as (client, storage):
        echoed = await client.post("/api/1.1/wf/order-paid", json={"status": big})
        assert echoed.json()["response"]["status"] == big  # the caller still gets it all
        refused = await client.post("/api/1.1/wf/refuse", json={"status": big})
        assert refused.status_code == 422 and len(refused.json()["body"]["message"]) > 900_000
        items = await client.post("/api/1.1/wf/keep", json={"o": {"ids": list(range(100_000))}})
        ok, failed, listed = [await logged(storage, r) for r in (echoed, refused, items)]
    marker = "… [cut: "
    assert ok["params"]["status"].startswith("x" * 1000) and marker in ok["params"]["status"]
    assert ok["params"]["status"].endswith(f" of {len(big):,} characters]")
    assert marker in ok["result"]["status"]
    assert marker in failed["error"]["message"] and marker in failed["steps"][0]["reason"]
    assert listed["params"]["o"]["ids"][-1].endswith(" of 100,000 items]")
    assert listed["params"]["o"]["ids"][:10] == list(range(10))
    for run in (ok, failed, listed):
        for key in ("params", "result", "steps"):
            assert json_size(run[key]) <= MOST + 200, (key, json_size(run[key]))
        assert json_size(run) <= 4 * MOST + 2000


async def wait_until_within(storage: Storage, most: int) -> set[str]:
    """The stored runs, once they are `most` or fewer (the retention task trims in the
    background), or fail after 30 s."""
    deadline = time.monotonic() + 30
    while True:
        await storage.runs.flush_runs()
        ids = await stored_ids(storage)
        if len(ids) <= most:
            return ids
        assert time.monotonic() < deadline, f"{len(ids)} runs stored, not {most} or fewer"
        await asyncio.sleep(0.05)  # polling a condition, with a deadline that says what for


async def test_many_runs_keep_the_log_within_max_rows_as_they_arrive(
        tmp_path: Path, storage_url: str) -> None:
    """The log is trimmed as runs arrive, each time a tenth of the bound was recorded, not
    only every `purge_interval` (an hour here)."""
    run_log = "run_log: {max_rows: 20, purge_interval: 1h}"
    async with gateway(tmp_path, storage_url, run_log) as (client, storage):
        for rounds in (30, 150):  # the second round comes after the pass at start, surely
            responses = [await client.post("/api/1.1/wf/order-paid", json={"status": f"{n}"})
                         for n in range(rounds)]
            kept = await wait_until_within(storage, 20)
            assert {r.headers["x-run-id"] for r in responses[-10:]} <= kept


async def test_the_run_log_is_bounded_in_bytes_by_default(tmp_path: Path,
                                                          storage_url: str) -> None:
    """`run_log.max_bytes` has a default (1 GiB), and a smaller one holds as runs arrive."""
    assert Settings().run_log_max_bytes == 1024 ** 3
    run_log = "run_log: {max_bytes: 200000, purge_interval: 1h}"
    async with gateway(tmp_path, storage_url, run_log) as (client, storage):
        for number in range(60):  # incompressible, so that both databases store about as much
            text = random.Random(number).randbytes(30_000).hex()
            await client.post("/api/1.1/wf/order-paid", json={"status": text})
        await storage.runs.flush_runs()
        size = await storage.runs.run_size()
        assert size > 10_000
        kept = await wait_until_within(storage, 200_000 // size)
    assert 0 < len(kept) < 60


def test_a_trim_is_due_once_a_tenth_of_the_bound_was_recorded() -> None:
    """What was recorded decides, not the largest a run could be: small runs under the 1 GiB
    default are trimmed every 62,000 runs or so (a worst-case estimate of 64 KiB a run
    trimmed every 1,600, which cost a trivial request under load), large ones as soon as a
    tenth of the bound arrived."""
    default = Settings()
    assert not trim_due(default, (60_000, 60_000 * 700), (0, 0))
    assert trim_due(default, (64_000, 64_000 * 700), (0, 0))
    assert not trim_due(default, (1_000, 1_000 * 100_000), (0, 0))  # 100 MB: under a tenth
    assert trim_due(default, (1_100, 1_100 * 100_000), (0, 0))
    small = dataclasses.replace(default, run_log_max_bytes=200_000, run_log_max_rows=50)
    assert trim_due(small, (12, 12 * 20_000), (11, 11 * 20_000))  # one run of 20 KB
    assert not trim_due(small, (14, 4_000), (11, 1_000))
    assert trim_due(small, (16, 5_000), (11, 1_000))  # five rows: a tenth of max_rows
