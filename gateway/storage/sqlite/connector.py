"""The connections to one SQLite file, shared by the SQLite roles.

Writes go through the group-committing `Writer` (one thread, one connection). Reads that
the planner answers from one of our indexes run on the event loop thread, on a reader
connection of their own: in WAL mode a reader never waits for the writer, and such a query
takes tens of microseconds, less than the ~75 µs of handing it to a thread and back. Reads
that would scan go to a reader thread instead, so a slow one cannot stall the loop.
Driver errors leave this module translated (`Catalog.translate`) and chained.

Inside a run's transaction (`begin()`), writes are that run's turn of the writer, and
reads after its first write go through the writer too, so that the run sees what it wrote.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from gateway.core.errors import StorageError, StorageUnavailableError
from gateway.storage.common import geo, rollup, transaction
from gateway.storage.common.catalog import Catalog
from gateway.storage.common.sql_files import queries
from gateway.storage.sqlite.dialect import DISTANCE_FUNCTION, LOWER_FUNCTION, fold
from gateway.storage.sqlite.error_mapping import UNAVAILABLE, unavailable
from gateway.storage.sqlite.writer import Held, Writer

Q = queries("sqlite")
T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]


def path_from_url(url: str) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix) :] in ("", ":memory:"):
        raise StorageError(f"not a SQLite file URL: {url!r} (use sqlite:///path/to/file.db)")
    return url[len(prefix) :]


def violated_index(exc: sqlite3.Error) -> str | None:
    """The unique index a failed write broke (SQLite names it in the message), if any."""
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError) and "index '" in text:
        return text.split("index '", 1)[1].rstrip("'")
    return None


class SqliteUnit(transaction.Unit):
    """A run's transaction on SQLite: its turn of the writer, from its first write."""

    def __init__(self, owner: SqliteConnector, seconds: float) -> None:
        super().__init__(owner)
        self.owner: SqliteConnector = owner
        self.writer = owner.writer
        self.held = Held(seconds)

    async def commit(self) -> None:
        if not self.end():
            return
        pending, self.pending = self.pending, []
        try:
            if self.written:
                await self.writer.end(self.held, commit=True)
            elif pending:  # nothing held the writer: one write, committed with others
                await self.writer.call(lambda conn: [work(conn) for work in pending])
        except sqlite3.Error as exc:
            raise self.owner.translate(exc) from exc
        self.committed()

    async def flush(self) -> None:
        """The writes held back, sent now: the unit's next statement needs them first."""
        pending, self.pending = self.pending, []
        self.written = True
        await self.writer.call(lambda conn: [work(conn) for work in pending], self.held)

    async def rollback(self) -> None:
        if self.end() and self.written and self.writer.alive:
            try:
                await self.writer.end(self.held, commit=False)
            except StorageUnavailableError:  # the writer stopped: nothing of it committed
                pass


class SqliteConnector:
    """The writer, the event loop's reader and the reader threads of one SQLite file."""

    def __init__(self, url: str, catalog: Catalog) -> None:
        self.path = path_from_url(url)
        self.catalog = catalog
        self.writer = Writer(self._connect_writer, Q["upsert_runs"])
        self._reader: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gateway-sqlite-reader")
        self._local = threading.local()
        self._pool_connections: list[sqlite3.Connection] = []

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=512
        )
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.create_function(LOWER_FUNCTION, 1, fold, deterministic=True)
        conn.create_function(DISTANCE_FUNCTION, 4, geo.sql_distance_km, deterministic=True)
        # the rollup's bucket, for the migration that fills it from an older log
        conn.create_function("gateway_duration_bucket", 1, rollup.bucket, deterministic=True)
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: the WAL is synced at every commit, so an acknowledged write survives a
        # power cut; group commit makes that one fsync per batch, not per write.
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _pool_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            self._pool_connections.append(conn)
        return conn

    async def start(self) -> None:
        """Start the writer (which creates the file); `open_reader()` once it is migrated."""
        try:
            await self.writer.start()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {self.path}: {exc}") from exc

    def open_reader(self) -> None:
        self._reader = self._connect()

    async def stop(self) -> None:
        await self.writer.stop()
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)
        for conn in [*self._pool_connections, *([self._reader] if self._reader else [])]:
            conn.close()
        self._reader = None

    @property
    def reader(self) -> sqlite3.Connection:
        """The event loop's own reader: only for reads bounded by an index."""
        assert self._reader is not None, "open() the storage first"
        return self._reader

    def translate(self, exc: sqlite3.Error) -> StorageError:
        if unavailable(exc):
            return StorageUnavailableError(UNAVAILABLE)
        return self.catalog.translate(exc, violated_index(exc))

    def begin(self, seconds: float) -> transaction.Unit | transaction.Joined:
        """The current task's storage work as one transaction (see `storage.common.transaction`),
        which may hold the writer `seconds` at most."""
        if transaction.current(self) is not None:
            return transaction.JOINED
        return SqliteUnit(self, seconds)

    def writing(self) -> bool:
        """Whether the current task's transaction holds writes the readers cannot see."""
        current = transaction.current(self)
        return current is not None and (current.written or bool(current.pending))

    async def write_later(self, work: Work[Any]) -> None:
        """`work`, whose result its caller needs not, in the task's transaction: held back
        until the transaction's next statement or its end (see `Unit.pending`). Outside one,
        written now."""
        current = transaction.current(self)
        if isinstance(current, SqliteUnit) and not current.written:
            current.pending.append(work)
            return
        await self.write(work)

    async def write(self, work: Work[T]) -> T:
        """`work` run by the writer, in a transaction, committed (with others) before this
        returns; cancelled while it waits its turn, it never runs (see `Writer.call`).
        Inside a run's transaction it is part of it, answered at once, committed at its
        end."""
        current = transaction.current(self)
        held = None
        if isinstance(current, SqliteUnit):
            if current.pending:
                await current.flush()
            current.written = True
            held = current.held
        try:
            return cast(T, await self.writer.call(work, held))
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc

    async def read_near(self, work: Work[T]) -> T:
        """`work` on the event loop's reader (`read_here`), or through the writer when the
        task's transaction holds writes of its own that the reader cannot see yet."""
        if self.writing():
            return await self.write(work)
        return self.read_here(work)

    def read_here(self, work: Work[T]) -> T:
        """`work` run right here on the event loop's reader."""
        try:
            return work(self.reader)
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc

    async def read(self, work: Work[T]) -> T:
        """`work` run on a reader thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: work(self._pool_connection()))
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc

    async def fetch(self, sql: str, params: Any) -> list[Any]:
        """The rows of one query, read on a reader thread."""
        return await self.read(lambda conn: conn.execute(sql, params).fetchall())
