"""Admin API keys on PostgreSQL: `KeyStore` over a `PostgresConnector`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.core.errors import DuplicateError
from gateway.storage.common.sql_files import queries
from gateway.storage.contract import ApiKey
from gateway.storage.postgresql.connector import PostgresConnector

Q = queries("postgresql")


def _key(row: Any) -> ApiKey:
    return ApiKey(row[0], row[1].astimezone(UTC),
                  *(v.astimezone(UTC) if v else None for v in row[2:4]))


class PostgresKeys:
    """`KeyStore` on a PostgreSQL database."""

    def __init__(self, connector: PostgresConnector) -> None:
        self._db = connector

    async def create_key(self, label: str, hash: str, at: datetime) -> None:
        if not await self._db.execute(Q["create_key"], (label, hash, at)):
            raise DuplicateError(f"a key labelled {label!r} exists already", "key", "label")

    async def list_keys(self) -> list[ApiKey]:
        return [_key(row) for row in await self._db.fetch(Q["list_keys"])]

    async def revoke_key(self, label: str, at: datetime) -> bool:
        return bool(await self._db.execute(Q["revoke_key"], (at, label)))

    async def find_key(self, hash: str) -> ApiKey | None:
        rows = await self._db.fetch(Q["find_key"], (hash,))
        return _key(rows[0]) if rows else None

    async def touch_key(self, hash: str, at: datetime) -> None:
        await self._db.execute(Q["touch_key"], (at, hash))
