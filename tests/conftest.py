"""Shared fixtures: real storage on a fresh SQLite file or a fresh PostgreSQL database, and
the app served in-process with a client (`served`, and the `serve` fixture).

PostgreSQL tests run when GATEWAY_TEST_POSTGRES_URL points at a server (CI sets it); each
test gets its own database cloned from a template database migrated once. The template is
named for its migrations (`gateway_test_template_<digest>`), so test runs of checkouts with
different migrations can share one server without rebuilding each other's template.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import os
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from gateway.compiler.loader import load
from gateway.core.clock import Clock, utc_now
from gateway.core.settings import with_environment
from gateway.runtime.model import Registry
from gateway.server.app import Gateway, create_app
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


Config = str | Path | Sequence[Path] | Registry
Peer = tuple[str, int]
DEFAULT_PEER: Peer = ("127.0.0.1", 123)  # httpx.ASGITransport's


@dataclass(frozen=True, slots=True)
class Served:
    """An app serving a config in its lifespan, and a client of it."""

    client: httpx.AsyncClient
    app: Gateway
    registry: Registry
    storage: Storage | None
    base_url: str

    def connect(self, peer: Peer = DEFAULT_PEER) -> httpx.AsyncClient:
        """Another client of the same app, seen as coming from `peer` (enter it with
        `async with`)."""
        transport = httpx.ASGITransport(app=self.app, client=peer)
        return httpx.AsyncClient(transport=transport, base_url=self.base_url)


def config_paths(config: str | Path | Sequence[Path], home: Path | None) -> list[Path]:
    """The files or folders of a config given as paths, or as YAML text (written in `home`,
    in a file named for the text: a test that serves two configs gets two files)."""
    if isinstance(config, Path):
        return [config]
    if not isinstance(config, str):
        return list(config)
    if home is None:
        raise ValueError("a config given as text needs a home folder to be written in")
    text = textwrap.dedent(config).strip() + "\n"
    path = home / "served" / f"{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return [path]


def storage_of(database: str | Storage | None, home: Path | None) -> Storage:
    if database is None:
        if home is None:
            raise ValueError("the default SQLite database needs a home folder")
        database = f"sqlite:///{home / 'gateway.db'}"
    return open_storage(database) if isinstance(database, str) else database


@contextlib.asynccontextmanager
async def served(config: Config, database: str | Storage | None = None, *,
                 home: Path | None = None, stored: bool = True,
                 environment: Mapping[str, str] | None = None, clock: Clock = utc_now,
                 monotonic: Callable[[], float] = time.monotonic,
                 scheduler: bool = True, reload: bool = False, watch: bool = False,
                 peer: Peer = DEFAULT_PEER, root_path: str = "",
                 base_url: str = "http://gateway") -> AsyncIterator[Served]:
    """`config` served in-process: the app in its lifespan, and a client through
    `httpx.ASGITransport`.

    `config` is YAML text, a file or a folder, several of them, or a compiled registry.
    `database` is a URL or a store not yet opened (by default a fresh SQLite file in
    `home`); with `stored=False` the app has no database. `environment` is applied to the
    settings as `gateway serve` applies the process's (secrets, `GATEWAY_*`). `clock`,
    `monotonic` and `scheduler` are `create_app`'s (a test's `support.Clock` gives both
    clocks: `clock=clock, monotonic=clock.monotonic`); `reload` and `watch` reload the
    config from its paths as `gateway serve` does. `peer`, `root_path` and `base_url` are
    the client's."""
    paths = [] if isinstance(config, Registry) else config_paths(config, home)
    registry = config if isinstance(config, Registry) else load(paths)
    if environment is not None:
        registry = dataclasses.replace(
            registry, settings=with_environment(registry.settings, environment))
    storage = storage_of(database, home) if stored else None
    app = create_app(registry, storage, clock, scheduler, paths=paths if reload else (),
                     watch=watch, monotonic=monotonic)
    assert isinstance(app, Gateway)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=peer, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield Served(client, app, registry, storage, base_url)


Serve = Callable[..., contextlib.AbstractAsyncContextManager[Served]]


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    """`served`, at home in the test's folder: `async with serve(CONFIG, storage_url) as gw`."""
    return functools.partial(served, home=tmp_path)
