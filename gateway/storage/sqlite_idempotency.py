"""Idempotency keys and rate-limit counters on SQLite: `IdempotencyStore` and `RateCounter`
over a `SqliteConnector`. A claim is one transaction of the writer: its insert-or-take-over
and, when the key is held, the read of what holds it."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway.encoding import iso
from gateway.storage.interface import Claim
from gateway.storage.sqlfile import queries
from gateway.storage.sqlite_connector import SqliteConnector

Q = queries("sqlite")
log = logging.getLogger("gateway.storage")


def _logged(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("an idempotent answer was not stored: %s", done.exception())


class SqliteIdempotency:
    """`IdempotencyStore` on one SQLite file."""

    def __init__(self, connector: SqliteConnector) -> None:
        self._db = connector

    async def claim(self, scope: str, key: str, owner: str, now: datetime,
                    lease_until: datetime, expires_at: datetime) -> Claim:
        params = (scope, key, owner, iso(now), iso(lease_until), iso(expires_at))

        def work(conn: sqlite3.Connection) -> Claim:
            if conn.execute(Q["claim_key"], params).fetchall():
                return Claim("claimed")
            row = conn.execute(Q["find_key_claim"], (scope, key)).fetchone()
            if row is None or row[0] != "done":
                return Claim("running")
            return Claim("done", row[1], json.loads(row[2]), bytes(row[3]))

        return await self._db.write(work)

    async def finish(self, scope: str, key: str, owner: str, status: int,
                     headers: Mapping[str, str], body: bytes) -> None:
        """Queued, not awaited: the one writer runs jobs in order, so a claim of the same
        key made after this call sees the answer. A crash before it commits leaves the key
        to its lease (the next delivery runs again: at least once)."""
        params = (status, json.dumps(dict(headers)), body, scope, key, owner)
        done = self._db.writer.submit(lambda conn: conn.execute(Q["finish_key"], params))
        done.add_done_callback(_logged)

    async def release(self, scope: str, key: str, owner: str) -> None:
        params = (scope, key, owner)
        await self._db.write(lambda conn: conn.execute(Q["release_key"], params))

    async def purge_keys(self, now: datetime) -> int:
        stamp = iso(now)
        return int(await self._db.write(
            lambda conn: conn.execute(Q["purge_keys"], (stamp,)).rowcount))


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
