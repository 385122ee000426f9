"""The connections to one PostgreSQL database, shared by the PostgreSQL roles.

A psycopg 3 async pool of autocommit connections: a single-statement write is one round
trip, and PostgreSQL's own commit path groups concurrent commits. Driver errors leave this
module translated (`Catalog.translate`) and chained.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import AsyncConnectionPool

from gateway.encoding import dumps, loads
from gateway.errors import StorageError, StorageUnavailableError
from gateway.storage.backend import Catalog
from gateway.storage.limits import NotANumberError, OutOfRangeError

T = TypeVar("T")
Params = Sequence[Any] | Mapping[str, Any]


def jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=dumps)


UNAVAILABLE = "the database is unavailable; try again later"


def translate(catalog: Catalog, exc: psycopg.Error) -> StorageError:
    """The error to raise for a driver's `exc`: a connection that failed (or none to be had
    in time) is the database being unavailable (503), not a fault of the request."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StorageUnavailableError(UNAVAILABLE)
    if isinstance(exc, psycopg.errors.NumericValueOutOfRange):
        return OutOfRangeError("a number is beyond what its field holds")
    if isinstance(exc, psycopg.errors.InvalidTextRepresentation):
        return NotANumberError("a field does not hold a number")
    return catalog.translate(exc, violated_index(exc))


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # orjson reads a number beyond 64 bits as a double, as SQLite does: PostgreSQL writes
    # a large double (1e20) without an exponent, which the standard library would read as
    # an integer.
    set_json_loads(loads, conn)


def violated_index(exc: psycopg.Error) -> str | None:
    """The unique index a failed write broke, if that is why it failed."""
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return exc.diag.constraint_name
    return None


class PostgresConnector:
    """The connection pool of one PostgreSQL database."""

    def __init__(self, url: str, catalog: Catalog, min_size: int = 2, max_size: int = 16) -> None:
        self.catalog = catalog
        self.pool = AsyncConnectionPool(
            url, min_size=min_size, max_size=max_size, open=False,
            kwargs={"autocommit": True}, configure=_configure,
        )

    async def start(self) -> None:
        try:
            await self.pool.open(wait=True, timeout=10)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc

    async def stop(self) -> None:
        await self.pool.close()

    async def guard(self, work: Awaitable[T]) -> T:
        """`work` awaited, with driver errors translated. A task cancelled while psycopg
        waits gets its cancellation back: psycopg cancels the query on the server and raises
        `QueryCanceled`, which must not pass for a database error that a caller handles."""
        try:
            return await work
        except psycopg.Error as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError() from exc
            raise translate(self.catalog, exc) from exc

    async def fetch(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """The rows of one statement."""

        async def work() -> list[tuple[Any, ...]]:
            async with self.pool.connection() as conn:
                return await (await conn.execute(sql.encode(), params)).fetchall()

        return await self.guard(work())

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One statement; the number of rows it changed."""

        async def work() -> int:
            async with self.pool.connection() as conn:
                return (await conn.execute(sql.encode(), params)).rowcount

        return await self.guard(work())

    async def execute_many(self, sql: str, rows: Sequence[Params]) -> None:
        async def work() -> None:
            async with self.pool.connection() as conn, conn.cursor() as cur:
                await cur.executemany(sql.encode(), rows)

        await self.guard(work())
