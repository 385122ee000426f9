"""Users' passwords and tokens on PostgreSQL: `UserStore` over a `PostgresConnector`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.clock import utc_now
from gateway.errors import DuplicateError
from gateway.ids import new_id
from gateway.storage import codec
from gateway.storage.backend import StoredRow
from gateway.storage.interface import Change, Session
from gateway.storage.postgresql_connector import Conn, PostgresConnector, jsonb
from gateway.storage.sqlfile import queries

Q = queries("postgresql")


class PostgresUsers:
    """`UserStore` on a PostgreSQL database."""

    def __init__(self, connector: PostgresConnector) -> None:
        self._db = connector

    async def create_user(self, email: str, fields: Mapping[str, Any], password_hash: str,
                          created_by: str | None = None) -> Change:
        now = utc_now()
        id = new_id(now)
        data = codec.json_roundtrip(
            self._db.catalog.with_defaults("user", {**fields, "email": email}))

        async def work(conn: Conn) -> None:
            await conn.execute(Q["drop_stale_credential"].encode(), (email,))
            added = await conn.execute(Q["create_credential"].encode(),
                                       (email, id, password_hash))
            if not added.rowcount:
                raise DuplicateError("another user already has this email", "user", "email")
            await conn.execute(Q["create_record"].encode(),
                               (id, "user", jsonb(data), now, now, created_by))

        await self._db.atomic(work)
        row = StoredRow(id, "user", data, now, now, created_by)
        return Change("user", id, None, self._db.catalog.record(row))

    async def credential(self, email: str) -> tuple[str, str] | None:
        rows = await self._db.fetch(Q["find_credential"], (email,))
        return (rows[0][0], rows[0][1]) if rows else None

    async def create_token(self, hash: str, user_id: str, at: datetime,
                           expires_at: datetime) -> None:
        await self._db.execute(Q["create_token"], (hash, user_id, at, expires_at, at))

    async def find_token(self, hash: str) -> Session | None:
        rows = await self._db.fetch(Q["find_token"], (hash,))
        if not rows:
            return None
        user_id, *stamps = rows[0]
        return Session(user_id, *(stamp.astimezone(UTC) for stamp in stamps))

    async def touch_token(self, hash: str, at: datetime) -> None:
        await self._db.execute(Q["touch_token"], (at, hash))

    async def revoke_token(self, hash: str) -> bool:
        return bool(await self._db.execute(Q["revoke_token"], (hash,)))

    async def purge_tokens(self, now: datetime, idle_since: datetime) -> int:
        return await self._db.execute(Q["purge_tokens"], (now, idle_since))
