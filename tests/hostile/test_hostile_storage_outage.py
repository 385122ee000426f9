"""What a database that cannot serve does to a write: a 503 `UNAVAILABLE`, at once, on both
backends; and the SQLite writer, which outlives a broken batch and never commits a write
whose caller stopped waiting before the write began."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import served

from gateway.core.errors import StorageError, StorageUnavailableError
from gateway.storage.sqlite.storage import SqliteStorage

CONFIG = """
kind: settings
limits: {run_timeout: 500ms}
---
kind: data_type
name: item
fields:
  name: {type: text, indexed: true}
---
kind: api_workflow
name: add
expose: true
auth: none
params:
  name: {type: text}
steps:
  - id: item
    action: create_thing
    type: item
    fields: {name: "{{ params.name }}"}
  - action: return_data
    data: {id: "{{ steps.item._id }}"}
"""


@contextlib.asynccontextmanager
async def gateway_on(url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    async with served(CONFIG, url, home=tmp_path) as gateway:
        yield gateway.client, gateway.storage


# --- a database that cannot serve: 503 UNAVAILABLE, at once -----------------------------


async def test_sqlite_writes_answer_503_at_once_when_the_writer_has_stopped(
        tmp_path: Path) -> None:
    async with gateway_on(f"sqlite:///{tmp_path / 'gateway.db'}", tmp_path) as (client, store):
        await store.connector.writer.stop()
        try:
            response = await asyncio.wait_for(
                client.post("/api/1.1/wf/add", json={"name": "a"}), timeout=10)
        except TimeoutError:
            pytest.fail("a write waited 10 s for a writer thread that had stopped")
        assert response.status_code == 503
        assert response.json()["body"]["status"] == "UNAVAILABLE"


async def test_postgresql_writes_answer_503_while_the_database_is_gone(
        postgres_url: str, postgres_server: tuple[str, str], tmp_path: Path) -> None:
    server, template = postgres_server
    name = postgres_url.rsplit("/", 1)[1]
    async with gateway_on(postgres_url, tmp_path) as (client, _):
        assert (await client.post("/api/1.1/wf/add", json={"name": "a"})).status_code == 200
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        response = await client.post("/api/1.1/wf/add", json={"name": "b"})
        assert response.status_code == 503, response.text
        assert response.json()["body"]["status"] == "UNAVAILABLE"
        with psycopg.connect(server, autocommit=True) as admin:  # the database comes back
            admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        # The pool reconnects within its own timeout; the write waits for it, then goes in.
        assert (await client.post("/api/1.1/wf/add", json={"name": "c"})).status_code == 200


async def test_the_sqlite_writer_survives_a_batch_that_breaks_its_connection(
        tmp_path: Path) -> None:
    store = SqliteStorage(f"sqlite:///{tmp_path / 'gateway.db'}")
    await store.open()
    try:
        # The job closes the connection: its RELEASE and the batch's ROLLBACK then fail.
        with pytest.raises(StorageError):
            await store.connector.write(lambda conn: conn.close())
        created = await asyncio.wait_for(store.records.create("note", {"n": 1}), timeout=10)
        assert await store.records.get("note", created.id) is not None
        await store.ping()
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def writer_held(store: SqliteStorage) -> AsyncIterator[None]:
    """The writer busy with a job that waits to be let go: writes queue up behind it."""
    started, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(timeout=30)

    holder = asyncio.ensure_future(store.connector.write(hold))
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, started.wait, 10), "the writer never took the job"
    try:
        yield
    finally:
        release.set()
        await holder


async def test_a_write_cancelled_while_queued_never_commits(tmp_path: Path) -> None:
    store = SqliteStorage(f"sqlite:///{tmp_path / 'gateway.db'}")
    await store.open()
    try:
        async with writer_held(store):
            queued = asyncio.ensure_future(store.records.create("note", {"n": 1}))
            await asyncio.sleep(0)  # let it reach the queue
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
        await store.records.create("note", {"n": 2})  # the writer goes on
        assert [r["n"] for r in (await store.records.search("note")).results] == [2]
    finally:
        await store.close()


async def test_a_run_that_times_out_while_its_write_is_queued_leaves_no_record(
        tmp_path: Path) -> None:
    async with gateway_on(f"sqlite:///{tmp_path / 'gateway.db'}", tmp_path) as (client, store):
        async with writer_held(store):
            response = await client.post("/api/1.1/wf/add", json={"name": "late"})
            assert response.status_code == 500  # the run's 500 ms were up
        await store.records.create("item", {"name": "after"})
        names = [r["name"] for r in (await store.records.search("item")).results]
        assert names == ["after"]


@contextlib.asynccontextmanager
async def write_lock_held(url: str, seconds: float) -> AsyncIterator[None]:
    """Another connection holds what the run's commit needs (SQLite's write lock, the
    PostgreSQL records table) for `seconds` from now: the commit has begun, and waits."""
    if url.startswith("sqlite"):
        other = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None,
                                check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        release = lambda: other.execute("COMMIT")  # noqa: E731
    else:
        blocker = await psycopg.AsyncConnection.connect(url)
        await blocker.execute("LOCK TABLE gateway_records IN EXCLUSIVE MODE")
        release = None
    try:
        yield
        await asyncio.sleep(seconds)
    finally:
        if release is not None:
            release()
            other.close()
        else:
            await blocker.commit()
            await blocker.close()


async def test_a_commit_under_way_when_the_run_times_out_answers_what_happened(
        tmp_path: Path, storage_url: str) -> None:
    """The run's 500 ms pass while its commit waits for the database: the commit goes
    through, and the run answers 200 (it used to answer 500 while its record was kept, and
    an idempotent run then gave its key up to a retry that wrote it twice)."""
    async with gateway_on(storage_url, tmp_path) as (client, store):
        await store.records.search("item")  # opened: the lock comes after
        async with write_lock_held(storage_url, 1.5):
            sent = asyncio.ensure_future(client.post("/api/1.1/wf/add", json={"name": "x"}))
            await asyncio.sleep(0.2)
        response = await sent
        count = (await store.records.search("item")).count
    assert (response.status_code, count) == (200, 1), response.text


async def test_a_write_to_a_store_whose_writer_stopped_is_refused_not_queued(
        tmp_path: Path) -> None:
    store = SqliteStorage(f"sqlite:///{tmp_path / 'gateway.db'}")
    await store.open()
    await store.connector.writer.stop()
    try:
        with pytest.raises(StorageUnavailableError):
            await asyncio.wait_for(store.records.create("note", {"n": 1}), timeout=10)
    finally:
        await store.close()
