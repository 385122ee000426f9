"""Admin API keys on SQLite: `KeyStore` over a `SqliteConnector`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.core.encoding import iso, parse_iso
from gateway.core.errors import DuplicateError
from gateway.storage.common.sql_files import queries
from gateway.storage.contract import ApiKey
from gateway.storage.sqlite.connector import SqliteConnector

Q = queries("sqlite")


def _key(row: Any) -> ApiKey:
    return ApiKey(row[0], parse_iso(row[1]), *(parse_iso(v) if v else None for v in row[2:4]))


class SqliteKeys:
    """`KeyStore` on one SQLite file."""

    def __init__(self, connector: SqliteConnector) -> None:
        self._db = connector

    async def create_key(self, label: str, hash: str, at: datetime) -> None:
        row = (label, hash, iso(at))
        added = await self._db.write(lambda conn: conn.execute(Q["create_key"], row).rowcount)
        if not added:
            raise DuplicateError(f"a key labelled {label!r} exists already", "key", "label")

    async def list_keys(self) -> list[ApiKey]:
        return [_key(row) for row in await self._db.fetch(Q["list_keys"], ())]

    async def revoke_key(self, label: str, at: datetime) -> bool:
        params = (iso(at), label)
        changed = await self._db.write(lambda conn: conn.execute(Q["revoke_key"], params).rowcount)
        return bool(changed)

    async def find_key(self, hash: str) -> ApiKey | None:
        rows = self._db.read_here(lambda conn: conn.execute(Q["find_key"], (hash,)).fetchall())
        return _key(rows[0]) if rows else None

    async def touch_key(self, hash: str, at: datetime) -> None:
        params = (iso(at), hash)
        await self._db.write(lambda conn: conn.execute(Q["touch_key"], params))
