"""Users' passwords and tokens on PostgreSQL: `UserStore` over a `PostgresConnector`; and the
log-in that follows a user record's e-mail when a write changes it (`update_users`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg

from gateway.core.clock import utc_now
from gateway.core.errors import DuplicateError, InvalidDataError
from gateway.core.ids import new_id
from gateway.storage.common import codec, transaction
from gateway.storage.common.catalog import EMAIL_NEEDED, EMAIL_TAKEN, StoredRow
from gateway.storage.common.sql_files import queries
from gateway.storage.contract import Account, Change, Session
from gateway.storage.postgresql.connector import Conn, Params, PostgresConnector, jsonb

Q = queries("postgresql")


class PostgresUsers:
    """`UserStore` on a PostgreSQL database."""

    def __init__(self, connector: PostgresConnector) -> None:
        self._db = connector

    async def create_user(self, email: str, fields: Mapping[str, Any], password_hash: str,
                          created_by: str | None = None, *,
                          at: datetime | None = None) -> Change:
        now = at or utc_now()
        id = new_id(now)
        data = codec.json_roundtrip(
            self._db.catalog.with_defaults("user", {**fields, "email": email}))

        async def work(conn: Conn) -> None:
            await conn.execute(Q["drop_stale_credential"].encode(), (email,))
            added = await conn.execute(Q["create_credential"].encode(),
                                       (email, id, password_hash))
            if not added.rowcount:
                raise DuplicateError(EMAIL_TAKEN, "user", "email")
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

    async def revoke_token(self, hash: str,
                           committed: Callable[[], None] | None = None) -> bool:
        revoked = bool(await self._db.execute(Q["revoke_token"], (hash,)))
        if committed is not None:
            transaction.after_commit(self._db, committed)
        return revoked

    async def purge_tokens(self, now: datetime, idle_since: datetime) -> int:
        return (await self._db.execute(Q["purge_tokens"], (now, idle_since))
                + await self._db.execute(Q["purge_reset_tokens"], (now,)))

    async def user_credential(self, user_id: str) -> tuple[str, str] | None:
        rows = await self._db.fetch(Q["user_credential"], (user_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    async def set_password(self, user_id: str, email: str, password_hash: str) -> None:
        async def work(conn: Conn) -> None:
            # a new password ends the reset links sent before it
            await conn.execute(Q["drop_reset_tokens"].encode(), (user_id,))
            if (await conn.execute(Q["set_password"].encode(),
                                   (password_hash, user_id))).rowcount:
                return
            await conn.execute(Q["drop_stale_credential"].encode(), (email,))
            added = await conn.execute(Q["create_credential"].encode(),
                                       (email, user_id, password_hash))
            if not added.rowcount:
                raise DuplicateError(EMAIL_TAKEN, "user", "email")

        await self._db.atomic(work)

    async def revoke_user_tokens(self, user_id: str, keep: str | None = None,
                                 committed: Callable[[str], None] | None = None
                                 ) -> list[str]:
        rows = await self._db.fetch(Q["revoke_user_tokens"], (user_id, keep), write=True)
        hashes = [row[0] for row in rows]
        if committed is not None and hashes:
            transaction.after_commit(self._db, transaction.each_of(committed, hashes))
        return hashes

    async def create_reset_token(self, hash: str, user_id: str, at: datetime,
                                 expires_at: datetime) -> None:
        await self._db.execute(Q["create_reset_token"], (hash, user_id, at, expires_at))

    async def use_reset_token(self, hash: str, now: datetime) -> str | None:
        async def work(conn: Conn) -> str | None:
            rows = await (await conn.execute(Q["use_reset_token"].encode(), (hash,))).fetchall()
            if not rows or rows[0][1] <= now:
                return None
            await conn.execute(Q["drop_reset_tokens"].encode(), (rows[0][0],))
            return str(rows[0][0])

        return await self._db.atomic(work)

    async def disable_user(self, user_id: str, at: datetime,
                           committed: Callable[[str], None] | None = None) -> bool:
        async def work(conn: Conn) -> bool:
            await conn.execute(Q["drop_reset_tokens"].encode(), (user_id,))
            return bool((await conn.execute(Q["disable_user"].encode(), (user_id, at))).rowcount)

        added = await self._db.atomic(work)
        await self.revoke_user_tokens(user_id, None, committed)
        return added

    async def enable_user(self, user_id: str) -> bool:
        return bool(await self._db.execute(Q["enable_user"], (user_id,)))

    async def list_accounts(self, limit: int) -> list[Account]:
        return [_account(row) for row in await self._db.fetch(Q["list_accounts"], (limit,))]

    async def find_account(self, key: str) -> Account | None:
        rows = await self._db.fetch(Q["find_account"], (key, key.lower()))
        return _account(rows[0]) if rows else None


def _account(row: tuple[Any, ...]) -> Account:
    user_id, email, has_password, disabled_at, created_at = row
    return Account(user_id, email, bool(has_password),
                   None if disabled_at is None else disabled_at.astimezone(UTC),
                   created_at.astimezone(UTC))


async def update_users(conn: Conn, sql: str, params: Params) -> list[tuple[Any, ...]]:
    """`update_records` of users whose e-mail it sets, in one transaction with their
    log-ins, which follow the e-mail each record now shows (folded by the caller): an
    address another user's password holds is refused, and a user who has a password keeps
    an address."""
    rows: list[tuple[Any, ...]] = await (await conn.execute(sql.encode(), params)).fetchall()
    for row in rows:
        user_id, email = row[0], row[6].get("email")
        if email is None or email == "":
            found = await conn.execute(Q["has_credential"].encode(), (user_id,))
            if await found.fetchone() is not None:
                raise InvalidDataError(EMAIL_NEEDED)
            continue
        await conn.execute(Q["drop_stale_credential"].encode(), (email,))
        # reset links sent to an address the user may leave
        await conn.execute(Q["drop_reset_tokens"].encode(), (user_id,))
        try:
            await conn.execute(Q["move_credential"].encode(), {"email": email, "user": user_id})
        except psycopg.errors.UniqueViolation as exc:
            raise DuplicateError(EMAIL_TAKEN, "user", "email") from exc
    return rows
