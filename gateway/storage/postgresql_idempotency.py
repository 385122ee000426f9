"""Idempotency keys and rate-limit counters on PostgreSQL: `IdempotencyStore` and
`RateCounter` over a `PostgresConnector`, shared by every gateway instance on the database.
`INSERT … ON CONFLICT DO UPDATE … WHERE` claims a key atomically: of any number of
concurrent claims, one gets the row back."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from gateway.storage.interface import Claim
from gateway.storage.postgresql_connector import PostgresConnector, jsonb
from gateway.storage.sqlfile import queries

Q = queries("postgresql")
# A key released between a failed claim and the read of what held it is claimed again;
# past this many tries the request is told the key is in progress.
CLAIM_TRIES = 3


class PostgresIdempotency:
    """`IdempotencyStore` on a PostgreSQL database."""

    def __init__(self, connector: PostgresConnector) -> None:
        self._db = connector

    async def claim(self, scope: str, key: str, owner: str, now: datetime,
                    lease_until: datetime, expires_at: datetime) -> Claim:
        params = {"scope": scope, "key": key, "owner": owner, "now": now,
                  "lease": lease_until, "expires": expires_at}
        for _ in range(CLAIM_TRIES):
            if await self._db.fetch(Q["claim_key"], params):
                return Claim("claimed")
            rows = await self._db.fetch(Q["find_key_claim"], (scope, key))
            if rows and rows[0][0] == "done":
                state, status, headers, body = rows[0]
                return Claim("done", status, headers, bytes(body))
            if rows:
                return Claim("running")
        return Claim("running")

    async def finish(self, scope: str, key: str, owner: str, status: int,
                     headers: Mapping[str, str], body: bytes) -> None:
        await self._db.execute(Q["finish_key"],
                               (status, jsonb(dict(headers)), body, scope, key, owner))

    async def release(self, scope: str, key: str, owner: str) -> None:
        await self._db.execute(Q["release_key"], (scope, key, owner))

    async def purge_keys(self, now: datetime) -> int:
        return await self._db.execute(Q["purge_keys"], (now,))


class PostgresRates:
    """`RateCounter` on a PostgreSQL database: one counter for every instance."""

    def __init__(self, connector: PostgresConnector) -> None:
        self._db = connector

    async def hit(self, scope: str, who: str, bucket: int, expires_at: datetime) -> int:
        rows = await self._db.fetch(Q["hit_rate"], (scope, who, bucket, expires_at))
        return int(rows[0][0])

    async def purge_counters(self, now: datetime) -> int:
        return await self._db.execute(Q["purge_rates"], (now,))
