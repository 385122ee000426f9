"""The connections to one PostgreSQL database, shared by the PostgreSQL roles.

A psycopg 3 async pool of autocommit connections: a single-statement write is one round
trip, and PostgreSQL's own commit path groups concurrent commits. Driver errors leave this
module translated (`Catalog.translate`) and chained.

Inside a run's transaction (`begin()`), the run's first write takes a connection of its own
and opens a transaction on it; every later statement of the run goes there, each in a
savepoint so that a statement that fails (a duplicate, say) costs only itself, and the run's
end commits or rolls back. Reads before the first write take any connection, as outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import AsyncConnectionPool

from gateway.core.encoding import dumps, loads
from gateway.core.errors import StorageError, StorageUnavailableError
from gateway.storage.common import transaction
from gateway.storage.common.catalog import Catalog
from gateway.storage.common.limits import NotANumberError, OutOfRangeError

T = TypeVar("T")
Params = Sequence[Any] | Mapping[str, Any]
Conn = psycopg.AsyncConnection[Any]
Work = Callable[[Conn], Awaitable[T]]
# A statement held back until its transaction's next one (`execute_later`): its SQL, its
# parameters, and what to raise if it must change a row and changes none.
Deferred = tuple[str, Params, Exception | None]
log = logging.getLogger(__name__)


def jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=dumps)


UNAVAILABLE = "the database is unavailable; try again later"


def translate(catalog: Catalog, exc: psycopg.Error) -> StorageError:
    """The error to raise for a driver's `exc`: a connection that failed (or none to be had
    in time) is the database being unavailable (503), not a fault of the request."""
    if isinstance(exc, psycopg.errors.TransactionRollback | psycopg.errors.LockNotAvailable):
        # a deadlock broken, or a serialization failure: the same request may well pass
        return StorageUnavailableError(
            "the database ended the transaction to let another through; try again")
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


class PostgresUnit(transaction.Unit):
    """A run's transaction on PostgreSQL: a connection of its own, from its first write."""

    def __init__(self, owner: PostgresConnector) -> None:
        super().__init__(owner)
        self.db = owner
        self.lock = asyncio.Lock()  # one statement at a time on the connection
        self.conn: Conn | None = None
        self._held: contextlib.AsyncExitStack | None = None

    async def run(self, work: Work[T]) -> T:
        """`work` on the unit's connection: the first one opens the transaction (and a
        failing first one leaves none open, unless writes held back until it are in it),
        later ones each in a savepoint."""
        async with self.lock:
            if self.conn is not None:
                async with self.conn.transaction():
                    return await work(self.conn)
            held = contextlib.AsyncExitStack()
            conn: Conn = await held.enter_async_context(self.db.pool.connection())
            try:
                await held.enter_async_context(conn.transaction())
                pending, self.pending = self.pending, []
                await _run_all(conn, pending)  # held back until now (`Unit.pending`)
                if not pending:
                    result = await work(conn)
            except BaseException as exc:
                await held.__aexit__(type(exc), exc, exc.__traceback__)
                raise
            self.conn, self._held, self.written = conn, held, True
            if pending:  # kept whatever `work` does: a failing one costs only itself
                async with conn.transaction():
                    return await work(conn)
            return result

    async def commit(self) -> None:
        """Commit, seen through: cancelled meanwhile (the run's time is up), the commit
        already on its way to the server is waited for, and if it committed the cancellation
        is dropped, so that the run answers what happened rather than a failure whose
        writes landed (and an idempotent run never gives its key up to a retry then)."""
        if not self.end():
            return
        held, self._held, self.conn = self._held, None, None
        pending, self.pending = self.pending, []
        done = asyncio.ensure_future(self._commit(held, pending))
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            await asyncio.wait([done])
            if done.cancelled():
                raise
            failed = done.exception()
            if failed is not None:  # its own reason (the database gone: 503), not the time
                raise failed from None
        self.committed()

    async def _commit(self, held: contextlib.AsyncExitStack | None,
                      pending: list[Deferred]) -> None:
        if held is not None:
            await self.db.guard(_finish(held, None))
        elif len(pending) == 1:  # one statement is a transaction of its own
            await self.db.execute_later(*pending[0])
        elif pending:
            await self.db.atomic(lambda conn: _run_all(conn, pending))

    async def rollback(self) -> None:
        if not self.end():
            return
        held, self._held, self.conn = self._held, None, None
        if held is not None:
            try:
                await _finish(held, psycopg.Rollback())
            except psycopg.Error:  # the connection broke: the server rolled it back
                log.warning("a run's transaction could not be rolled back cleanly")


async def _run_all(conn: Conn, pending: Sequence[Deferred]) -> None:
    """Statements held back (`execute_later`), run in order in the transaction on `conn`."""
    for sql, params, refusal in pending:
        changed = (await conn.execute(sql.encode(), params)).rowcount
        if refusal is not None and not changed:
            raise refusal


async def _finish(held: contextlib.AsyncExitStack, rollback: psycopg.Rollback | None) -> None:
    """The transaction on `held`'s connection committed (or rolled back), the connection
    given back to the pool; seen through even if the caller is cancelled meanwhile."""
    if rollback is None:
        await asyncio.shield(held.aclose())
    else:
        await asyncio.shield(held.__aexit__(type(rollback), rollback, None))


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

    def begin(self) -> transaction.Unit | transaction.Joined:
        """The current task's storage work as one transaction (see `storage.common.transaction`)."""
        if transaction.current(self) is not None:
            return transaction.JOINED
        return PostgresUnit(self)

    def _unit(self, write: bool) -> PostgresUnit | None:
        """The task's transaction a statement belongs to: any write, and the reads after
        its first write."""
        current = transaction.current(self)
        if isinstance(current, PostgresUnit) and (write or current.conn is not None
                                                  or current.pending):
            return current
        return None

    async def execute_later(self, sql: str, params: Params,
                            refusal: Exception | None = None) -> None:
        """A write whose result its caller needs not, in the task's transaction: held back
        until the transaction's next statement or its end (see `Unit.pending`). Outside one,
        executed now. With `refusal`, the statement must change a row: if it changes none,
        `refusal` is raised and the transaction rolls back."""
        current = transaction.current(self)
        if isinstance(current, PostgresUnit) and current.conn is None:
            current.pending.append((sql, params, refusal))
            return
        if not await self.execute(sql, params) and refusal is not None:
            raise refusal

    async def atomic(self, work: Work[T]) -> T:
        """`work` as one transaction (a savepoint of the task's transaction, if any)."""
        current = self._unit(write=True)
        return await (self.alone(work) if current is None else self.guard(current.run(work)))

    async def alone(self, work: Work[T]) -> T:
        """`work` as a transaction of its own, whatever transaction the task is in."""

        async def own() -> T:
            async with self.pool.connection() as conn, conn.transaction():
                return await work(conn)

        return await self.guard(own())

    async def fetch(self, sql: str, params: Params = (), *,
                    write: bool = False) -> list[tuple[Any, ...]]:
        """The rows of one statement (`write`: one that changes rows, as `RETURNING` does)."""

        async def rows(conn: Conn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(sql.encode(), params)).fetchall()

        current = self._unit(write)
        if current is not None:
            return await self.guard(current.run(rows))

        async def work() -> list[tuple[Any, ...]]:
            async with self.pool.connection() as conn:
                return await rows(conn)

        return await self.guard(work())

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One statement; the number of rows it changed."""

        async def count(conn: Conn) -> int:
            return (await conn.execute(sql.encode(), params)).rowcount

        current = self._unit(write=True)
        if current is not None:
            return await self.guard(current.run(count))

        async def work() -> int:
            async with self.pool.connection() as conn:
                return await count(conn)

        return await self.guard(work())
