"""The storage contract, run against every backend (SQLite always, PostgreSQL when set up)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from gateway.core.errors import DuplicateError, RecordNotFoundError, ValidationError
from gateway.storage import Change, Constraint, FieldSpec, SortKey, Storage, TypeSpec, open_storage
from gateway.storage.common.query import compile_order, compile_where
from gateway.storage.common.sql_files import queries
from gateway.storage.postgresql.dialect import PostgresDialect
from gateway.storage.sqlite.dialect import SqliteDialect

LEAD = TypeSpec(
    "lead",
    {
        f.name: f
        for f in [
            FieldSpec("name", "text", indexed=True),
            FieldSpec("email", "text", unique=True),
            FieldSpec("score", "number", indexed=True, default=0),
            FieldSpec("rank", "integer"),
            FieldSpec("active", "boolean"),
            FieldSpec("due", "date", indexed=True),
            FieldSpec("tags", "text", list=True),
            FieldSpec("meta", "object"),
            FieldSpec("owner", "user"),
        ]
    },
)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def storage_types() -> Sequence[TypeSpec]:
    return [LEAD]


def names(records: list[dict[str, Any]]) -> list[str]:
    return [r["name"] for r in records]


async def test_create_and_get_round_trip(storage: Storage) -> None:
    change = await storage.records.create(
        "lead", {"name": "ada", "tags": ["x", "y"], "meta": {"a": [1, {"b": None}]}}, "u1"
    )
    created = change.record
    assert change == Change("lead", created["_id"], None, created)
    assert re.fullmatch(r"\d{13}x\d{18}", created["_id"])
    assert created["_type"] == "lead" and created["created_by"] == "u1"
    assert (
        created["created_at"].tzinfo is not None and created["created_at"] == created["modified_at"]
    )
    assert created["score"] == 0  # the declared default
    assert await storage.records.get("lead", created["_id"]) == created
    assert await storage.records.get("other", created["_id"]) is None
    assert await storage.records.get("lead", "1x1") is None


async def test_update_merges_and_touches_modified_at(storage: Storage) -> None:
    lead = (await storage.records.create("lead", {"name": "ada", "score": 1, "rank": 2})).record
    change = await storage.records.update(
        "lead", lead["_id"], {"score": 5, "active": True, "rank": None}
    )
    assert (change.type, change.id, change.before) == ("lead", lead["_id"], lead)
    changed = change.record
    assert (changed["name"], changed["score"], changed["active"], changed["rank"]) == (
        "ada",
        5,
        True,
        None,
    )
    assert (
        changed["modified_at"] >= lead["modified_at"]
        and changed["created_at"] == lead["created_at"]
    )
    assert await storage.records.get("lead", lead["_id"]) == changed
    with pytest.raises(RecordNotFoundError):
        await storage.records.update("lead", "1x1", {"score": 1})


async def test_update_many_and_delete(storage: Storage) -> None:
    ids = [(await storage.records.create("lead", {"name": n})).id for n in "abc"]
    changed = await storage.records.update_many("lead", [ids[2], "1x1", ids[0]], {"score": 9})
    assert [c.id for c in changed] == [ids[2], ids[0]]  # missing ids are skipped
    assert (await storage.records.get("lead", ids[1]) or {})["score"] == 0
    assert await storage.records.delete("lead", ids[0]) is not None
    assert await storage.records.delete("lead", ids[0]) is None
    deleted = await storage.records.delete_many("lead", [ids[1], ids[2], "1x1"])
    assert [c.id for c in deleted] == [ids[1], ids[2]]
    assert (await storage.records.search("lead")).count == 0


async def test_changes_hold_the_record_before_and_after(storage: Storage) -> None:
    a, b = [(await storage.records.create("lead", {"name": n, "score": 1})).record for n in "ab"]
    (first,) = await storage.records.update_many("lead", [a["_id"]], {"score": 2})
    assert first.before == a and first.after == await storage.records.get("lead", a["_id"])
    assert (first.before["score"], first.after["score"]) == (1, 2)
    changes = await storage.records.update_many("lead", [b["_id"], a["_id"]], {"rank": 7})
    assert [c.before for c in changes] == [b, first.after]
    assert [(c.after or {}).get("rank") for c in changes] == [7, 7]
    gone = await storage.records.delete("lead", a["_id"])
    assert gone == Change("lead", a["_id"], changes[1].after, None)
    (last,) = await storage.records.delete_many("lead", [b["_id"]])
    assert last == Change("lead", b["_id"], changes[0].after, None) and last.record["rank"] == 7


async def test_concurrent_updates_each_see_the_state_they_changed(storage: Storage) -> None:
    """Before is read with the write: concurrent increments chain, none sees a stale row."""
    lead = (await storage.records.create("lead", {"name": "n", "score": 0})).record
    changes = await asyncio.gather(
        *(storage.records.update("lead", lead["_id"], {"rank": i}) for i in range(20))
    )
    final = (await storage.records.get("lead", lead["_id"]) or {})["rank"]
    befores = [(c.before or {}).get("rank") for c in changes]
    # Each write starts from the state the previous one left: one chain, from no rank to
    # the final one, with no state seen twice.
    assert sorted(befores, key=str) == sorted([None, *(set(range(20)) - {final})], key=str)
    assert all((c.after or {}).get("rank") == i for i, c in enumerate(changes))


async def test_date_round_trip_returns_utc(storage: Storage) -> None:
    due = datetime(2024, 3, 5, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    lead = (await storage.records.create("lead", {"name": "a", "due": due})).record
    fetched = await storage.records.get("lead", lead["_id"])
    assert (
        fetched is not None and fetched["due"] == due and fetched["due"].utcoffset() == timedelta(0)
    )
    assert lead["due"] == due


async def test_unique_violation_raises_duplicate_error(storage: Storage) -> None:
    first = (await storage.records.create("lead", {"name": "a", "email": "a@example.com"})).record
    other = (await storage.records.create("lead", {"name": "b", "email": "b@example.com"})).record
    with pytest.raises(DuplicateError) as caught:
        await storage.records.create("lead", {"name": "c", "email": "a@example.com"})
    assert (caught.value.type_name, caught.value.field) == ("lead", "email")
    assert caught.value.__cause__ is not None
    with pytest.raises(DuplicateError):
        await storage.records.update("lead", other["_id"], {"email": "a@example.com"})
    # Other types may hold the same value: the index is per type.
    await storage.records.create("contact", {"email": "a@example.com"})
    assert (await storage.records.get("lead", first["_id"])) is not None
    assert (await storage.records.search("lead")).count == 2


DATA: list[dict[str, Any]] = [
    {
        "name": "ada",
        "score": 10,
        "rank": 3,
        "active": True,
        "due": T0,
        "tags": ["vip", "eu"],
        "owner": "u1",
    },
    {
        "name": "bob",
        "score": 2.5,
        "rank": 1,
        "active": False,
        "due": T0 + timedelta(days=1),
        "tags": ["eu"],
    },
    {
        "name": "Cyd",
        "score": -1,
        "rank": 2,
        "active": True,
        "due": T0 - timedelta(days=1),
        "tags": [],
    },
    {"name": "dee", "score": 7, "rank": None, "email": "", "tags": ["us"], "meta": {"k": 1}},
    {"name": "Émile", "score": 100, "rank": 5, "active": False},
]

CASES: list[tuple[Constraint, list[str]]] = [
    (Constraint("name", "equals", "bob"), ["bob"]),
    (Constraint("score", "equals", 7), ["dee"]),
    (Constraint("active", "equals", True), ["ada", "Cyd"]),
    (Constraint("due", "equals", T0), ["ada"]),
    (Constraint("meta", "equals", {"k": 1}), ["dee"]),
    (Constraint("name", "not_equal", "bob"), ["ada", "Cyd", "dee", "Émile"]),
    (Constraint("active", "not_equal", True), ["bob", "dee", "Émile"]),
    (Constraint("rank", "is_empty"), ["dee"]),
    (Constraint("email", "is_empty"), ["ada", "bob", "Cyd", "dee", "Émile"]),
    (Constraint("tags", "is_empty"), ["Cyd", "Émile"]),
    (Constraint("tags", "is_not_empty"), ["ada", "bob", "dee"]),
    (Constraint("owner", "is_not_empty"), ["ada"]),
    (Constraint("name", "text_contains", "D"), ["ada", "Cyd", "dee"]),
    (Constraint("name", "text_contains", "émi"), ["Émile"]),
    (Constraint("score", "greater_than", 2.5), ["ada", "dee", "Émile"]),
    (Constraint("score", "less_than", 10), ["bob", "Cyd", "dee"]),
    (Constraint("rank", "greater_than", 2), ["ada", "Émile"]),
    (Constraint("due", "greater_than", T0 - timedelta(hours=1)), ["ada", "bob"]),
    (Constraint("due", "less_than", T0), ["Cyd"]),
    (Constraint("name", "greater_than", "bob"), ["dee", "Émile"]),  # byte order: "C" < "a"
    (Constraint("name", "in", ["ada", "dee", "zed"]), ["ada", "dee"]),
    (Constraint("score", "in", [10, 7]), ["ada", "dee"]),
    (Constraint("name", "in", []), []),
    (Constraint("name", "not_in", ["ada", "dee"]), ["bob", "Cyd", "Émile"]),
    (Constraint("rank", "not_in", [1, 2]), ["ada", "dee", "Émile"]),
    (Constraint("tags", "contains", "eu"), ["ada", "bob"]),
    (Constraint("tags", "not_contains", "eu"), ["Cyd", "dee", "Émile"]),
    (Constraint("created_by", "equals", "u9"), ["bob"]),
    (Constraint("created_by", "is_empty"), ["ada", "Cyd", "dee", "Émile"]),
    (Constraint("created_at", "greater_than", T0), ["ada", "bob", "Cyd", "dee", "Émile"]),
    (Constraint("undeclared", "equals", "x"), ["ada"]),
    (Constraint("undeclared", "is_empty"), ["bob", "Cyd", "dee", "Émile"]),
]


async def seed(storage: Storage) -> list[dict[str, Any]]:
    records = []
    for n, fields in enumerate(DATA):
        extra = {"undeclared": "x"} if n == 0 else {}
        change = await storage.records.create("lead", {**fields, **extra}, "u9" if n == 1 else None)
        records.append(change.record)
    return records


@pytest.mark.parametrize(
    ("constraint", "expected"),
    CASES,
    ids=[f"{c.key}-{c.constraint}-{n}" for n, (c, _) in enumerate(CASES)],
)
async def test_every_constraint(
    storage: Storage, constraint: Constraint, expected: list[str]
) -> None:
    await seed(storage)
    page = await storage.records.search("lead", [constraint], [SortKey("created_at")])
    assert names(page.results) == expected
    assert (page.count, page.remaining, page.cursor) == (len(expected), 0, None)


async def test_constraints_combine_with_and(storage: Storage) -> None:
    await seed(storage)
    page = await storage.records.search(
        "lead", [Constraint("tags", "contains", "eu"), Constraint("score", "less_than", 5)]
    )
    assert names(page.results) == ["bob"]


async def test_unknown_constraint_is_rejected(storage: Storage) -> None:
    with pytest.raises(ValidationError):
        await storage.records.search("lead", [Constraint("name", "resembles", "x")])


async def test_multi_key_sort(storage: Storage) -> None:
    await seed(storage)
    page = await storage.records.search(
        "lead", sort=[SortKey("active", descending=True), SortKey("score")]
    )
    # Empty values sort first when descending, last when ascending.
    assert names(page.results) == ["dee", "Cyd", "ada", "bob", "Émile"]
    page = await storage.records.search("lead", sort=[SortKey("rank")])
    assert names(page.results) == ["bob", "Cyd", "ada", "Émile", "dee"]
    page = await storage.records.search(
        "lead", sort=[SortKey("due", descending=True), SortKey("name")]
    )
    assert names(page.results) == ["dee", "Émile", "bob", "ada", "Cyd"]


async def test_limit_and_cursor_page_through_everything(storage: Storage) -> None:
    created = [
        (await storage.records.create("lead", {"name": f"n{i:02d}", "score": i % 4})).record
        for i in range(25)
    ]
    seen: list[str] = []
    pages = []
    cursor = None
    while True:
        page = await storage.records.search(
            "lead", sort=[SortKey("score")], limit=10, cursor=cursor
        )
        pages.append((len(page.results), page.count, page.remaining))
        seen += [r["_id"] for r in page.results]
        cursor = page.cursor
        if cursor is None:
            break
    assert pages == [(10, 25, 15), (10, 25, 5), (5, 25, 0)]
    assert sorted(seen) == sorted(r["_id"] for r in created)
    with pytest.raises(ValidationError):
        await storage.records.search("lead", limit=10, cursor="not a cursor")


async def test_concurrent_creates_are_all_persisted(storage: Storage) -> None:
    created = await asyncio.gather(
        *(storage.records.create("lead", {"name": f"c{i}"}) for i in range(300))
    )
    ids = {c.id for c in created}
    assert len(ids) == 300
    page = await storage.records.search("lead")
    assert page.count == 300 and {r["_id"] for r in page.results} == ids


async def test_failing_write_does_not_abort_concurrent_writes(storage: Storage) -> None:
    await storage.records.create("lead", {"name": "a", "email": "same"})
    outcomes = await asyncio.gather(
        *(
            storage.records.create("lead", {"name": f"x{i}", "email": "same" if i % 2 else f"e{i}"})
            for i in range(20)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(o, DuplicateError) for o in outcomes) == 10
    assert (await storage.records.search("lead")).count == 11


async def test_data_survives_close_and_reopen(storage_url: str) -> None:
    store = open_storage(storage_url)
    await store.open([LEAD])
    lead = (await store.records.create("lead", {"name": "kept", "due": T0})).record
    store.runs.record_run({"id": "run-1", "workflow": "w", "status": "success", "started_at": T0})
    await store.close()  # flushes the run log
    store = open_storage(storage_url)
    await store.open([LEAD])
    try:
        assert await store.records.get("lead", lead["_id"]) == lead
        assert (await store.runs.get_run("run-1") or {}).get("workflow") == "w"
    finally:
        await store.close()


def run(id: str, workflow: str, status: str, started_at: datetime) -> dict[str, Any]:
    return {
        "id": id,
        "workflow": workflow,
        "source": "http",
        "identity": {"user": None},
        "status": status,
        "started_at": started_at,
        "duration_ms": 1.5,
        "params": {"a": 1},
        "result": {"ok": True},
        "error": None,
        "steps": [
            {"id": "s", "action": "log", "status": "success", "duration_ms": 0.2, "reason": None}
        ],
    }


async def test_run_log_record_list_get_purge(storage: Storage) -> None:
    runs = [
        run("r1", "orders", "success", T0),
        run("r2", "orders", "failed", T0 + timedelta(hours=1)),
        run("r3", "leads", "success", T0 + timedelta(hours=2)),
        run("r4", "leads", "not_run", T0 + timedelta(days=20)),
    ]
    for r in runs:
        storage.runs.record_run(r)
    await storage.runs.flush_runs()
    assert await storage.runs.get_run("r2") == runs[1]
    assert await storage.runs.get_run("nope") is None
    assert [r["id"] for r in await storage.runs.list_runs()] == ["r4", "r3", "r2", "r1"]
    assert [r["id"] for r in await storage.runs.list_runs(workflow="orders")] == ["r2", "r1"]
    assert [r["id"] for r in await storage.runs.list_runs(status="success")] == ["r3", "r1"]
    assert [r["id"] for r in await storage.runs.list_runs(since=T0 + timedelta(hours=1))] == [
        "r4",
        "r3",
        "r2",
    ]
    assert [r["id"] for r in await storage.runs.list_runs(limit=1)] == ["r4"]
    now = T0 + timedelta(days=21)
    # Successes older than 7 days go; failures are kept for 30 days.
    assert await storage.runs.purge_runs(now, timedelta(days=7), timedelta(days=30)) == 2
    assert [r["id"] for r in await storage.runs.list_runs()] == ["r4", "r2"]


async def test_record_run_updates_a_run_recorded_twice(storage: Storage) -> None:
    storage.runs.record_run(run("r1", "w", "running", T0))
    storage.runs.record_run(run("r1", "w", "success", T0))
    await storage.runs.flush_runs()
    assert [r["status"] for r in await storage.runs.list_runs()] == ["success"]


async def test_record_run_never_raises(storage: Storage) -> None:
    storage.runs.record_run(
        {"id": "odd", "workflow": "w", "status": "failed", "params": {"x": object()}}
    )
    await storage.runs.flush_runs()
    logged = await storage.runs.get_run("odd")
    assert logged is not None and logged["params"]["x"].startswith("<object")
    assert logged["started_at"].tzinfo is not None


def explain(storage: Storage, constraint: Constraint, sort: list[SortKey]) -> str:
    backend = storage.url.partition(":")[0]
    dialect = SqliteDialect() if backend == "sqlite" else PostgresDialect()
    where = compile_where(dialect, LEAD, "lead", [constraint])
    sql = queries(backend)["search_records"].format(
        where=where.sql, order=compile_order(dialect, LEAD, sort)
    )
    if backend == "sqlite":
        with sqlite3.connect(storage.url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", [*where.params, 10, 0]).fetchall()
            return "\n".join(str(row[3]) for row in rows)
    with psycopg.connect(storage.url) as conn:
        conn.execute("SET enable_seqscan = off")  # a tiny table would be scanned anyway
        rows = conn.execute(
            f"EXPLAIN {sql}".encode(), [*where.params, *where.params, 10, 0]
        ).fetchall()
        return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize(
    ("constraint", "field"),
    [
        (Constraint("name", "equals", "n3"), "name"),
        (Constraint("score", "greater_than", 40), "score"),
        (Constraint("due", "less_than", T0), "due"),
    ],
)
async def test_searches_on_indexed_fields_use_their_index(
    storage: Storage, constraint: Constraint, field: str
) -> None:
    for i in range(50):
        await storage.records.create(
            "lead", {"name": f"n{i}", "score": i, "due": T0 + timedelta(days=i - 25)}
        )
    plan = explain(storage, constraint, [SortKey(field)])
    assert f"gateway_ix_lead_{field}_" in plan, plan
    assert "SCAN" not in plan and "Seq Scan" not in plan, plan
