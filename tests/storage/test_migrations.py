"""The migrations produce exactly the declared schema, on both backends, and run once.

The declared schema of each backend is kept beside its migrations
(`gateway/storage/<backend>/sql/schema.txt`); a migration that changes the schema must
change that file too, which keeps the schema reviewable in one place.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import psycopg
from support import run_sql

from gateway.storage import FieldSpec, Job, Storage, TypeSpec, open_storage
from gateway.storage.common.sql_files import migrations


def declared_schema(backend: str) -> list[str]:
    text = resources.files(f"gateway.storage.{backend}").joinpath("sql", "schema.txt").read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _squash(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


_SQLITE_OBJECTS = (
    "SELECT name, sql FROM sqlite_master WHERE type = ? AND name LIKE 'gateway%' ORDER BY name"
)


def _sqlite_column(table: str, name: str, type_: str, notnull: int, pk: int) -> str:
    flags = (" not null" if notnull else "") + (" primary key" if pk else "")
    return f"column {table}.{name} {type_.lower()}{flags}"


def sqlite_schema(path: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        lines = []
        for table, _ in conn.execute(_SQLITE_OBJECTS, ("table",)).fetchall():
            lines.append(f"table {table}")
            for _, name, type_, notnull, _, pk in conn.execute(f"PRAGMA table_info({table})"):
                lines.append(_sqlite_column(table, name, type_, notnull, pk))
        for name, sql in conn.execute(_SQLITE_OBJECTS, ("index",)):
            lines.append(f"index {name}: {_squash(sql)}")
        lines += [f"trigger {name}" for name, _ in conn.execute(_SQLITE_OBJECTS, ("trigger",))]
    return lines


def postgres_schema(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        lines = []
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name LIKE 'gateway%'"
            " ORDER BY table_name, ordinal_position"
        ).fetchall()
        for table in sorted({row[0] for row in columns}):
            lines.append(f"table {table}")
            lines += [
                f"column {t}.{c} {d}{' not null' if n == 'NO' else ''}"
                for t, c, d, n in columns
                if t == table
            ]
        for name, sql in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            " AND tablename LIKE 'gateway%' ORDER BY indexname"
        ):
            lines.append(f"index {name}: {_squash(sql).replace(' public.', ' ')}")
        lines += [f"trigger {name}" for (name,) in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
            " AND tgrelid::regclass::text LIKE 'gateway%' ORDER BY tgname")]
    return lines


def schema_of(storage: Storage) -> list[str]:
    if storage.url.startswith("sqlite"):
        return sqlite_schema(storage.url.removeprefix("sqlite:///"))
    return postgres_schema(storage.url)


def backend_of(storage: Storage) -> str:
    return storage.url.partition(":")[0]


async def test_migrations_produce_the_declared_schema(storage: Storage) -> None:
    assert schema_of(storage) == declared_schema(backend_of(storage))


async def test_every_migration_is_recorded_and_migrate_is_idempotent(storage: Storage) -> None:
    assert await storage.migrate() == []
    assert await storage.migrate() == []
    expected = [m.name for m in migrations(backend_of(storage))]
    assert expected and expected[0] == "0001_initial"
    if backend_of(storage) == "sqlite":
        with sqlite3.connect(storage.url.removeprefix("sqlite:///")) as conn:
            applied = [
                row[0] for row in conn.execute("SELECT name FROM gateway_migrations ORDER BY name")
            ]
    else:
        with psycopg.connect(storage.url) as conn:
            applied = [
                row[0] for row in conn.execute("SELECT name FROM gateway_migrations ORDER BY name")
            ]
    assert applied == expected


async def test_a_fresh_sqlite_file_is_migrated_on_open(tmp_path: Path) -> None:
    store = open_storage(f"sqlite:///{tmp_path / 'fresh.db'}")
    await store.open()
    try:
        assert sqlite_schema(str(tmp_path / "fresh.db")) == declared_schema("sqlite")
    finally:
        await store.close()


def index_lines(storage: Storage) -> list[str]:
    return [line for line in schema_of(storage) if re.match(r"index gateway_[iu]x_", line)]


NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LEAD = TypeSpec(
    "lead",
    {
        "email": FieldSpec("email", "text", unique=True),
        "score": FieldSpec("score", "number", indexed=True),
    },
)
LEAD_CHANGED = TypeSpec("lead", {"email": FieldSpec("email", "text", indexed=True)})


async def reopen(url: str, types: list[TypeSpec]) -> list[str]:
    store = open_storage(url)
    await store.open(types)
    await store.close()
    return index_lines(store)


async def test_type_indexes_are_created_refreshed_and_idempotent(storage_url: str) -> None:
    first = await reopen(storage_url, [LEAD])
    assert len(first) == 2 and any("UNIQUE" in line and "email" in line for line in first)
    assert all("WHERE" in line and "'lead'" in line for line in first)  # partial: per type
    assert await reopen(storage_url, [LEAD]) == first  # idempotent
    changed = await reopen(storage_url, [LEAD_CHANGED])  # stale indexes are replaced
    assert len(changed) == 1 and "UNIQUE" not in changed[0] and "email" in changed[0]


def series_tick(id: str, subject: str, series: str | None, created: datetime) -> Job:
    return Job(id, "daily", "recurring", NOW + timedelta(days=1), subject=subject,
               unique_key=f"k:{id}", created_at=created,
               data={"frequency": "daily", **({"series": series} if series else {})})


async def test_the_upgrade_runs_on_with_the_series_of_each_record_s_newest_tick(
        storage: Storage) -> None:
    await storage.jobs.set_series("daily", "r2", "s-a", NOW)
    await storage.jobs.set_series("daily", "r3", "s-c", NOW)
    await storage.jobs.enqueue([series_tick("old", "r1", None, NOW),  # from before series
                                series_tick("a", "r2", "s-a", NOW),
                                series_tick("c", "r3", "s-c", NOW)])
    await storage.jobs.set_series("daily", "r2", "s-b", NOW)  # cancels a
    await storage.jobs.enqueue([series_tick("b", "r2", "s-b", NOW + timedelta(seconds=1))])
    await storage.jobs.cancel(["c"], NOW)  # r3's series has no tick to come
    (migration,) = [m.name for m in migrations(backend_of(storage))
                    if m.name.endswith("_job_series")]
    run_sql(storage.url, "UPDATE gateway_jobs SET status = 'pending' WHERE id = 'a'",  # two series
            "DROP TABLE gateway_series",
            f"DELETE FROM gateway_migrations WHERE name = '{migration}'")
    assert await storage.migrate() == [migration]
    probes = [series_tick("old-next", "r1", "old", NOW), series_tick("b-next", "r2", "s-b", NOW),
              series_tick("a-next", "r2", "s-a", NOW), series_tick("c-next", "r3", "s-c", NOW)]
    assert await storage.jobs.enqueue(probes) == ["old-next", "b-next"]
