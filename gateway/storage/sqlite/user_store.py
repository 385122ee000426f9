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
from gateway.storage.contract import Account, Change, Session
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

        def purge(conn: sqlite3.Connection) -> int:
            return int(conn.execute(Q["purge_tokens"], params).rowcount
                       + conn.execute(Q["purge_reset_tokens"], (iso(now),)).rowcount)

        return await self._db.write(purge)

    async def user_credential(self, user_id: str) -> tuple[str, str] | None:
        rows = await self._db.read_near(
            lambda conn: conn.execute(Q["user_credential"], (user_id,)).fetchall())
        return (rows[0][0], rows[0][1]) if rows else None

    async def set_password(self, user_id: str, email: str, password_hash: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(Q["drop_reset_tokens"], (user_id,))  # a new password ends them
            if conn.execute(Q["set_password"], (password_hash, user_id)).rowcount:
                return
            conn.execute(Q["drop_stale_credential"], (email,))
            if not conn.execute(Q["create_credential"], (email, user_id, password_hash)).rowcount:
                raise DuplicateError(EMAIL_TAKEN, "user", "email")

        await self._db.write(write)

    async def revoke_user_tokens(self, user_id: str, keep: str | None = None,
                                 committed: Callable[[str], None] | None = None
                                 ) -> list[str]:
        rows = await self._db.write(
            lambda conn: conn.execute(Q["revoke_user_tokens"], (user_id, keep)).fetchall())
        hashes = [row[0] for row in rows]
        if committed is not None and hashes:
            transaction.after_commit(self._db, transaction.each_of(committed, hashes))
        return hashes

    async def create_reset_token(self, hash: str, user_id: str, at: datetime,
                                 expires_at: datetime) -> None:
        row = (hash, user_id, iso(at), iso(expires_at))
        await self._db.write(lambda conn: conn.execute(Q["create_reset_token"], row))

    async def use_reset_token(self, hash: str, now: datetime) -> str | None:
        def use(conn: sqlite3.Connection) -> str | None:
            rows = conn.execute(Q["use_reset_token"], (hash,)).fetchall()
            if not rows or parse_iso(rows[0][1]) <= now:
                return None
            conn.execute(Q["drop_reset_tokens"], (rows[0][0],))
            return str(rows[0][0])

        return await self._db.write(use)

    async def disable_user(self, user_id: str, at: datetime,
                           committed: Callable[[str], None] | None = None) -> bool:
        def write(conn: sqlite3.Connection) -> int:
            conn.execute(Q["drop_reset_tokens"], (user_id,))
            return int(conn.execute(Q["disable_user"], (user_id, iso(at))).rowcount)

        added = bool(await self._db.write(write))
        await self.revoke_user_tokens(user_id, None, committed)
        return added

    async def enable_user(self, user_id: str) -> bool:
        return bool(await self._db.write(
            lambda conn: conn.execute(Q["enable_user"], (user_id,)).rowcount))

    async def list_accounts(self, limit: int) -> list[Account]:
        rows = await self._db.read_near(
            lambda conn: conn.execute(Q["list_accounts"], (limit,)).fetchall())
        return [_account(row) for row in rows]

    async def find_account(self, key: str) -> Account | None:
        rows = await self._db.read_near(
            lambda conn: conn.execute(Q["find_account"], (key, key.lower())).fetchall())
        return _account(rows[0]) if rows else None


def _account(row: tuple[Any, ...]) -> Account:
    user_id, email, has_password, disabled_at, created_at = row
    return Account(user_id, email, bool(has_password),
                   None if disabled_at is None else parse_iso(disabled_at), parse_iso(created_at))


def follow_email(conn: sqlite3.Connection, user_id: str, email: Any) -> None:
    """The log-in of a user whose record now shows `email` (folded by the caller), moved to
    it in the writer's transaction: an address another user's password holds is refused,
    and a user who has a password keeps an address."""
    if email is None or email == "":
        if conn.execute(Q["has_credential"], (user_id,)).fetchone() is not None:
            raise InvalidDataError(EMAIL_NEEDED)
        return
    conn.execute(Q["drop_stale_credential"], (email,))
    conn.execute(Q["drop_reset_tokens"], (user_id,))  # links sent to an address it may leave
    try:
        conn.execute(Q["move_credential"], (email, user_id))
    except sqlite3.IntegrityError as exc:
        raise DuplicateError(EMAIL_TAKEN, "user", "email") from exc
