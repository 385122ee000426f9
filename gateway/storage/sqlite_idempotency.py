"""Idempotency keys and rate-limit counters on SQLite: `IdempotencyStore` and `RateCounter`
over a `SqliteConnector`.

A SQLite file serves one gateway process (`serve` refuses several workers on it), so that
process decides claims in its own memory (`KeyMemory`), on the event loop, with no await:
two claims of one key can never both win. The database learns of each claim, answer and
release afterwards: they are queued, and what one turn of the event loop queued goes to
the writer as one job, committed with the writer's next group commit; no request waits
for it. The database is read only for a key memory does not know while it may hold one
(keys from before a restart, or forgotten past the memory's bounds).

What a crash costs: a claim or answer not yet committed (a few milliseconds' worth) is
lost, and the sender's redelivery runs again (at least once, never a lost delivery)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway.encoding import iso
from gateway.errors import StorageError, StorageUnavailableError
from gateway.storage.backend import HeldKey, KeyMemory
from gateway.storage.interface import Claim
from gateway.storage.sqlfile import queries
from gateway.storage.sqlite_connector import SqliteConnector
from gateway.storage.writer import STOPPED

Q = queries("sqlite")
log = logging.getLogger("gateway.storage")
Write = tuple[str, tuple[Any, ...]]


class SqliteIdempotency:
    """`IdempotencyStore` on one SQLite file, decided in this process's memory."""

    def __init__(self, connector: SqliteConnector) -> None:
        self._db = connector
        self.memory = KeyMemory()
        self._queued: list[Write] = []
        self._count = 0  # writes handed to the writer so far, numbered from 1
        self._last: asyncio.Future[Any] | None = None

    async def claim(self, scope: str, key: str, owner: str, now: datetime,
                    lease_until: datetime, expires_at: datetime) -> Claim:
        if not self._db.writer.alive:
            raise StorageUnavailableError(STOPPED)
        slot = (scope, key)
        memory = self.memory
        held = memory.keys.get(slot)
        if held is None and not memory.knows_all(now):
            held = self._read(slot, now)
        found = memory.decide(held, now)
        if found is not None:
            return found
        memory.hold(slot, HeldKey(owner, lease_until, expires_at, None, self._count + 1))
        self._queue(Q["take_key"], (scope, key, owner, iso(lease_until), iso(expires_at)))
        return Claim("claimed")

    async def finish(self, scope: str, key: str, owner: str, status: int,
                     headers: Mapping[str, str], body: bytes) -> None:
        answer = Claim("done", status, dict(headers), body)
        if self.memory.finish((scope, key), owner, answer):
            self.memory.keys[(scope, key)].written = self._count + 1
            self._queue(Q["finish_key"],
                        (status, json.dumps(answer.headers), body, scope, key, owner))

    async def release(self, scope: str, key: str, owner: str) -> None:
        if self.memory.drop((scope, key), owner):
            self._queue(Q["release_key"], (scope, key, owner))

    async def purge_keys(self, now: datetime) -> int:
        self.memory.purge(now)
        await self.flush()
        stamp = iso(now)
        return int(await self._db.write(
            lambda conn: conn.execute(Q["purge_keys"], (stamp,)).rowcount))

    async def flush(self) -> None:
        """Hand what is queued to the writer and wait until it is committed."""
        self._hand_over()
        if self._last is not None:
            await asyncio.wait([self._last])

    def _read(self, slot: tuple[str, str], now: datetime) -> HeldKey | None:
        """The key as the database holds it (a primary-key read on the event loop's
        reader); the first read also learns the latest expiry the database holds."""
        memory = self.memory
        if memory.horizon is None:
            latest = self._db.read_here(
                lambda conn: conn.execute(Q["latest_key_expiry"]).fetchone()[0])
            memory.horizon = now if latest is None else datetime.fromisoformat(latest)
            if memory.knows_all(now):
                return None
        row = self._db.read_here(lambda conn: conn.execute(Q["read_key"], slot).fetchone())
        if row is None:
            return None
        owner, state, lease_until, expires_at, status, headers, body = row
        answer = None if state != "done" else \
            Claim("done", status, json.loads(headers), bytes(body))
        held = HeldKey(owner, datetime.fromisoformat(lease_until),
                       datetime.fromisoformat(expires_at), answer, 0)
        memory.hold(slot, held)
        return held

    def _queue(self, sql: str, params: tuple[Any, ...]) -> None:
        if not self._queued:
            asyncio.get_running_loop().call_soon(self._hand_over)
        self._queued.append((sql, params))

    def _hand_over(self) -> None:
        """What this turn of the event loop queued, as one job of the writer."""
        if not self._queued:
            return
        writes, self._queued = self._queued, []
        self._count += 1
        number = self._count

        def work(conn: sqlite3.Connection) -> None:
            for sql, params in writes:
                conn.execute(sql, params)

        try:
            done = self._db.writer.submit(work)
        except StorageError as exc:
            self._written(number, exc)
            return
        self._last = done
        done.add_done_callback(lambda future: self._written(
            number, None if future.cancelled() else future.exception()))

    def _written(self, number: int, error: BaseException | None) -> None:
        self.memory.committed = max(self.memory.committed, number)
        if error is not None:
            log.warning("idempotency keys were not stored (a redelivery of them may run "
                        "again after a restart): %s", error)


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
