"""`ping()`: a store that can serve answers, one that cannot raises `StorageError`, both
within about a second; `/readyz` says which."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import Serve

from gateway.compiler.loader import config_version
from gateway.core.errors import StorageError
from gateway.storage import Storage, open_storage
from gateway.storage.sqlite.storage import SqliteStorage

PROMPT = 1.5  # seconds: "about a second", with room for a slow test machine


async def test_a_working_store_pings(storage: Storage) -> None:
    began = time.monotonic()
    await storage.ping()
    assert time.monotonic() - began < PROMPT


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` made read-only. Root ignores file modes, so as root the file is also made
    immutable (`chattr +i`), which binds root too; where that is unavailable, skip."""
    mode = path.stat().st_mode
    path.chmod(0o444)
    immutable = False
    try:
        if os.geteuid() == 0:
            chattr = shutil.which("chattr")
            done = chattr and subprocess.run([chattr, "+i", str(path)], capture_output=True,
                                             check=False, timeout=10).returncode == 0
            if not done:
                pytest.skip("running as root, which ignores file modes, and `chattr +i` "
                            "(which does bind root) is not available on this file system")
            immutable = True
        yield
    finally:
        if immutable:
            subprocess.run([str(shutil.which("chattr")), "-i", str(path)], check=True,
                           timeout=10)
        path.chmod(mode)


async def test_sqlite_ping_fails_when_the_file_cannot_be_written(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = open_storage(f"sqlite:///{path}")
    await store.open()
    try:
        with read_only(path):
            began = time.monotonic()
            with pytest.raises(StorageError, match="cannot be written"):
                await store.ping()
            assert time.monotonic() - began < PROMPT
        await store.ping()
    finally:
        await store.close()


async def test_sqlite_ping_fails_when_the_writer_has_stopped(tmp_path: Path) -> None:
    store = SqliteStorage(f"sqlite:///{tmp_path / 'gateway.db'}")
    await store.open()
    try:
        await store.ping()
        await store.records.create("note", {"n": 1})
        await store.connector.writer.stop()  # what a crashed writer thread leaves: no thread
        began = time.monotonic()
        with pytest.raises(StorageError, match="writer .* has stopped"):
            await store.ping()
        assert time.monotonic() - began < PROMPT
    finally:
        await store.close()


async def test_postgresql_ping_fails_when_the_database_is_gone(
    postgres_url: str, postgres_server: tuple[str, str]
) -> None:
    store = open_storage(postgres_url)
    await store.open()
    try:
        await store.ping()
        name = postgres_url.rsplit("/", 1)[1]
        with psycopg.connect(postgres_server[0], autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        began = time.monotonic()
        with pytest.raises(StorageError):
            await store.ping()
        assert time.monotonic() - began < PROMPT
    finally:
        await store.close()


async def test_readyz_answers_503_when_the_store_cannot_serve(serve: Serve,
                                                              tmp_path: Path) -> None:
    store = SqliteStorage(f"sqlite:///{tmp_path / 'gateway.db'}")
    async with serve("""
        kind: api_workflow
        name: hello
        expose: true
        auth: none
        steps:
          - action: return_data
            data: {greeting: hello}
    """, store) as gateway:
        ready = await gateway.client.get("/readyz")
        facts = {"version": config_version(gateway.registry.files), "reload_refused": False}
        assert (ready.status_code, ready.json()) == (200, {"status": "ready", **facts})
        await store.connector.writer.stop()
        unready = await gateway.client.get("/readyz")
        assert (unready.status_code, unready.json()) == (
            503, {"status": "unavailable", **facts})
