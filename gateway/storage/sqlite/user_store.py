"""Users' passwords and tokens on SQLite: `UserStore` over a `SqliteConnector`; and the
log-in that follows a user record's e-mail when a write changes it (`follow_email`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from gateway.core.clock import utc_now
from gateway.core.encoding import dumps, iso, parse_iso
from gateway.core.errors import DuplicateError, InvalidDataError
from gateway.core.ids import new_id
from gateway.storage.common import transaction
from gateway.storage.common.catalog import EMAIL_NEEDED, EMAIL_TAKEN, StoredRow
from gateway.storage.common.sql_files import queries
from gateway.storage.contract import Change, Session
from gateway.storage.sqlite.connector import SqliteConnector

Q = queries("sqlite")


class SqliteUsers:
    """`UserStore` on one SQLite file."""

    def __init__(self, connector: SqliteConnector) -> None:
        self._db = connector

    async def create_user(self, email: str, fields: Mapping[str, Any], password_hash: str,
                          created_by: str | None = None, *,
                          at: datetime | None = None) -> Change:
        now = at or utc_now()
        id, stamp = new_id(now), iso(now)
        text = dumps(self._db.catalog.with_defaults("user", {**fields, "email": email}))

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(Q["drop_stale_credential"], (email,))
            if not conn.execute(Q["create_credential"], (email, id, password_hash)).rowcount:
                raise DuplicateError(EMAIL_TAKEN, "user", "email")
            conn.execute(Q["create_record"], (id, "user", text, stamp, stamp, created_by))

        await self._db.write(write)
        row = StoredRow(id, "user", json.loads(text), now, now, created_by)
        return Change("user", id, None, self._db.catalog.record(row))

    async def credential(self, email: str) -> tuple[str, str] | None:
        rows = await self._db.read_near(
            lambda conn: conn.execute(Q["find_credential"], (email,)).fetchall())
        return (rows[0][0], rows[0][1]) if rows else None

    async def create_token(self, hash: str, user_id: str, at: datetime,
                           expires_at: datetime) -> None:
        row = (hash, user_id, iso(at), iso(expires_at), iso(at))
        await self._db.write(lambda conn: conn.execute(Q["create_token"], row))

    async def find_token(self, hash: str) -> Session | None:
        rows = await self._db.read_near(
            lambda conn: conn.execute(Q["find_token"], (hash,)).fetchall())
        if not rows:
            return None
        user_id, *stamps = rows[0]
        return Session(user_id, *(parse_iso(stamp) for stamp in stamps))

    async def touch_token(self, hash: str, at: datetime) -> None:
        params = (iso(at), hash)
        await self._db.write(lambda conn: conn.execute(Q["touch_token"], params))

    async def revoke_token(self, hash: str,
                           committed: Callable[[], None] | None = None) -> bool:
        revoked = bool(await self._db.write(
            lambda conn: conn.execute(Q["revoke_token"], (hash,)).rowcount))
        if committed is not None:
            transaction.after_commit(self._db, committed)
        return revoked

    async def purge_tokens(self, now: datetime, idle_since: datetime) -> int:
        params = (iso(now), iso(idle_since))
        return int(await self._db.write(
            lambda conn: conn.execute(Q["purge_tokens"], params).rowcount))


def follow_email(conn: sqlite3.Connection, user_id: str, email: Any) -> None:
    """The log-in of a user whose record now shows `email` (folded by the caller), moved to
    it in the writer's transaction: an address another user's password holds is refused,
    and a user who has a password keeps an address."""
    if email is None or email == "":
        if conn.execute(Q["has_credential"], (user_id,)).fetchone() is not None:
            raise InvalidDataError(EMAIL_NEEDED)
        return
    conn.execute(Q["drop_stale_credential"], (email,))
    try:
        conn.execute(Q["move_credential"], (email, user_id))
    except sqlite3.IntegrityError as exc:
        raise DuplicateError(EMAIL_TAKEN, "user", "email") from exc
