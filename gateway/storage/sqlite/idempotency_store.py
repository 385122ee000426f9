"""Idempotency keys and rate-limit counters on SQLite: `IdempotencyStore` and `RateCounter`
over a `SqliteConnector`.

A SQLite file serves one gateway process (`serve` refuses several workers on it), so that
process decides claims in its own memory (`KeyMemory`), on the event loop, with no await:
two claims of one key can never both win. Only answers go to the database (a claim lives
as long as its run, in memory): the answers one turn of the event loop gave go to the
writer as one job, appended to the answers and committed with its next group commit, and
no request waits for that. Their keys are indexed later, thousands at a time
(`INDEX_BATCH`, sorted: many keys to a page of the index rather than a page each), and
memory forgets no answer before its key is indexed. The database is read only for a key
memory does not know while the database may hold one (answers from before a restart, or
forgotten past the memory's bounds).

What a crash costs: a run in progress, or an answer not yet committed (a few
milliseconds' worth), is not in the database; the sender's redelivery runs again (at
least once, never a lost delivery)."""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import Any

from gateway.core.encoding import dumps, iso
from gateway.core.errors import KeyTakenError, StorageError, StorageUnavailableError
from gateway.storage.common.sql_files import queries
from gateway.storage.contract import LOST_KEY, Claim
from gateway.storage.sqlite.connector import SqliteConnector
from gateway.storage.sqlite.error_mapping import STOPPED
from gateway.storage.sqlite.key_memory import Held, KeyMemory, Slot, answered, claimed

Q = queries("sqlite")
log = logging.getLogger("gateway.storage")
# The most answers whose keys wait to be indexed together (fewer when memory holds fewer keys
# than twice this: it keeps them all until then).
INDEX_BATCH = 4096
Row = tuple[Any, ...]
CLAIMED = Claim("claimed")


class SqliteIdempotency:
    """`IdempotencyStore` on one SQLite file, decided in this process's memory."""

    def __init__(self, connector: SqliteConnector) -> None:
        self._db = connector
        self.memory = KeyMemory()
        self._queued: list[Row] = []
        self._count = 0  # batches of answers handed to the writer so far, numbered from 1
        self._unindexed = 0  # answers handed over since the last batch of their keys
        self._unindexed_bytes = 0  # and the bytes of their bodies
        self._last: asyncio.Future[Any] | None = None

    async def claim(self, scope: str, key: str, owner: str, now: datetime,
                    lease_until: datetime, expires_at: datetime) -> Claim:
        """Decided in memory, without a round trip (a key memory lacks and the database may
        hold is read first)."""
        if not self._db.writer.alive:
            raise StorageUnavailableError(STOPPED)
        slot = (scope, key)
        memory = self.memory
        held = memory.keys.get(slot)
        stamp = now.timestamp()
        if held is None and memory.maybe_stored(stamp):
            held = self._read(slot)
        if held is not None and (found := memory.decide(held, stamp)) is not None:
            return found
        memory.hold(slot, claimed(owner, lease_until.timestamp(), expires_at.timestamp()))
        return CLAIMED

    def finish(self, scope: str, key: str, owner: str, status: int,
               headers: Mapping[str, str], body: bytes,
               expires_at: datetime) -> Awaitable[None] | None:
        """Keep the answer, and hand it to the writer after this turn of the event loop
        (until the expiry its claim was given, which memory holds).
        What the caller should await before it answers, if anything: the writer's catching
        up, when it is so far behind that memory holds twice its bound (the requests then go
        at the writer's pace)."""
        memory = self.memory
        slot = (scope, key)
        held = memory.keys.get(slot)
        text = dumps(headers)
        if held is not None and memory.finish(slot, owner, status, text, body, self._count + 1):
            if not self._queued:
                asyncio.get_running_loop().call_soon(self._hand_over)
            # the body as a bytearray: the sqlite3 module binds one as it is, while `bytes`
            # first goes through its adapter lookup, which raises and clears an
            # AttributeError per value (more than the rest of the row costs to bind)
            self._queued.append((scope, key, held[2], status, text, bytearray(body)))
        return self._caught_up() if memory.behind() else None

    async def release(self, scope: str, key: str, owner: str) -> None:
        self.memory.drop((scope, key), owner)  # the database never heard of the claim

    async def fence(self, scope: str, key: str, owner: str, lease_until: datetime) -> None:
        """Decided in memory, with no await between the check and the new lease: no claim
        of the key can come between them (claims are decided on this event loop too). The
        claim is then held until its answer or its release, however long the commit takes
        (memory is this process's: a crash forgets the claim anyway)."""
        if not self.memory.extend((scope, key), owner, math.inf):
            raise KeyTakenError(LOST_KEY)

    async def _caught_up(self) -> None:
        """Until the writer has done what is queued (handed over now): without indexing
        more often than `_hand_over` does, which a writer already behind could not afford
        once a request."""
        self._hand_over()
        if self._last is not None:
            await asyncio.wait([self._last])

    async def purge_keys(self, now: datetime) -> int:
        self.memory.purge(now.timestamp())
        await self.flush()
        stamp = now.timestamp()

        def purge(conn: sqlite3.Connection) -> int:
            purged = conn.execute(Q["purge_keys"], (stamp,)).rowcount
            if purged:
                conn.execute(Q["purge_slots"])
            return int(purged)

        return int(await self._db.write(purge))

    async def flush(self) -> None:
        """Hand what is queued to the writer, index every key, and wait until that is
        committed (memory can then forget any answer)."""
        self._hand_over(index=True)
        if self._last is not None:
            await asyncio.wait([self._last])

    async def start(self) -> None:
        """Index the keys of answers stored before a stop that had not been yet, then learn
        the latest expiry among the keys the database holds (a read on a reader thread)."""
        await self._db.write(_index)
        row = await self._db.read(lambda conn: conn.execute(Q["latest_key"]).fetchone())
        self.memory.load(row[0])

    def _read(self, slot: Slot) -> Held | None:
        """The key as the database holds it: an indexed read on the event loop's reader."""
        row = self._db.read_here(lambda conn: conn.execute(Q["read_key"], slot).fetchone())
        if row is None:
            return None
        expires_at, status, headers, body = row
        held = answered(expires_at, status, headers, bytes(body))
        self.memory.hold(slot, held)
        return held

    def _hand_over(self, index: bool = False) -> None:
        """The answers of this turn of the event loop, as one job of the writer; with their
        keys indexed too once `INDEX_BATCH` wait, or half memory's bound of bytes (or
        `index`): memory may forget an answer only once its key is indexed."""
        rows, self._queued = self._queued, []
        self._unindexed += len(rows)
        self._unindexed_bytes += sum(len(row[5]) for row in rows)
        index = (index and self._unindexed > 0) or \
            self._unindexed >= max(1, min(INDEX_BATCH, self.memory.most // 2)) or \
            self._unindexed_bytes >= self.memory.most_bytes // 2
        if not rows and not index:
            return
        self._count += 1
        number = self._count
        if index:
            self._unindexed = self._unindexed_bytes = 0

        def work(conn: sqlite3.Connection) -> None:
            if rows:
                conn.executemany(Q["put_key"], rows)
            if index:
                _index(conn)

        try:
            done = self._db.writer.submit(work)
        except StorageError as exc:
            self._written(number, exc, index)
            return
        self._last = done
        done.add_done_callback(lambda future: self._written(
            number, None if future.cancelled() else future.exception(), index))

    def _written(self, number: int, error: BaseException | None, indexed: bool) -> None:
        """A job of answers ended; with `indexed`, memory may forget every answer handed
        over up to it (even if it failed: the answers are then lost, and a redelivery of
        them runs again, rather than held in memory for ever)."""
        if indexed:
            self.memory.committed = max(self.memory.committed, number)
        if error is not None:
            log.warning("idempotent answers were not stored (a redelivery of them may run "
                        "again after a restart): %s", error)


def _index(conn: sqlite3.Connection) -> None:
    """Index the keys of the answers added since the last time."""
    conn.execute(Q["index_keys"])
    conn.execute(Q["indexed_keys"])


class SqliteRates:
    """`RateCounter` on one SQLite file (shared by the processes that use the file)."""

    def __init__(self, connector: SqliteConnector) -> None:
        self._db = connector

    async def hit(self, scope: str, who: str, bucket: int, expires_at: datetime) -> int:
        params = (scope, who, bucket, iso(expires_at))
        return int(await self._db.write(
            lambda conn: conn.execute(Q["hit_rate"], params).fetchone()[0]))

    async def purge_counters(self, now: datetime) -> int:
        stamp = iso(now)
        return int(await self._db.write(
            lambda conn: conn.execute(Q["purge_rates"], (stamp,)).rowcount))
