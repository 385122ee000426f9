"""Shared fixtures: real storage on a fresh SQLite file or a fresh PostgreSQL database.

PostgreSQL tests run when GATEWAY_TEST_POSTGRES_URL points at a server (CI sets it); each
test gets its own database cloned from a template database migrated once. The template is
named for its migrations (`gateway_test_template_<digest>`), so test runs of checkouts with
different migrations can share one server without rebuilding each other's template.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from gateway.storage import Storage, TypeSpec, open_storage
from gateway.storage.common.sql_files import migrations

POSTGRES_ENV = "GATEWAY_TEST_POSTGRES_URL"
TEMPLATE_PREFIX = "gateway_test_template_"
_TEMPLATE_LOCK = 7245623002


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _migrations_digest() -> str:
    text = "\0".join(f"{m.name}\0{m.sql}" for m in migrations("postgresql"))
    return hashlib.sha256(text.encode()).hexdigest()


def _template_name(digest: str) -> str:
    return TEMPLATE_PREFIX + digest[:16]


def _template_is_current(admin: psycopg.Connection, digest: str) -> bool:
    row = admin.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        (_template_name(digest),),
    ).fetchone()
    return row is not None and row[0] == digest


async def _migrate(url: str) -> None:
    storage = open_storage(url)
    await storage.open()
    await storage.close()


def _build_template(admin: psycopg.Connection, url: str, digest: str) -> None:
    template = _template_name(digest)
    admin.execute(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {template}")
    asyncio.run(_migrate(_with_database(url, template)))
    admin.execute(f"COMMENT ON DATABASE {template} IS '{digest}'")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[tuple[str, str]]:
    """The server's admin URL and the name of the template database, migrated and current."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}=postgresql://user@host:port/db")
    digest = _migrations_digest()
    with psycopg.connect(url, autocommit=True) as admin:
        # Several test runs may share the server: one of them (re)builds the template.
        admin.execute("SELECT pg_advisory_lock(%s)", (_TEMPLATE_LOCK,))
        try:
            if not _template_is_current(admin, digest):
                _build_template(admin, url, digest)
        finally:
            admin.execute("SELECT pg_advisory_unlock(%s)", (_TEMPLATE_LOCK,))
    yield url, _template_name(digest)


@pytest.fixture
def postgres_url(postgres_server: tuple[str, str]) -> Iterator[str]:
    """The URL of a fresh, migrated PostgreSQL database, dropped after the test."""
    server, template = postgres_server
    name = f"gateway_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    try:
        yield _with_database(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def storage_types() -> Sequence[TypeSpec]:
    """The data types `storage` is opened with; override it in a test module."""
    return ()


@pytest.fixture
async def storage(storage_url: str, storage_types: Sequence[TypeSpec]) -> AsyncIterator[Storage]:
    """An opened storage on a fresh database, for each backend."""
    store = open_storage(storage_url)
    await store.open(storage_types)
    try:
        yield store
    finally:
        await store.close()
