"""The users role: passwords and session tokens (`Session`, `UserStore`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gateway.storage.contract.types import Change


@dataclass(frozen=True, slots=True)
class Session:
    """A user's session token as it is kept: never the token itself."""

    user_id: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime


@dataclass(frozen=True, slots=True)
class Account:
    """A user as the command line lists it: never its password or tokens."""

    user_id: str
    email: str | None
    has_password: bool
    disabled_at: datetime | None
    created_at: datetime


class UserStore(Protocol):
    """Users' passwords and session tokens. A user is a record of type `user`; its password
    hash and its tokens live apart from it, so no search or template ever sees them. The
    e-mail a user logs in with is the one its record shows: an update that sets a user's
    `email` moves the log-in in the same transaction (or refuses an address another user's
    password holds, and an empty one for a user who has a password)."""

    # The user record and its password in one transaction; DuplicateError when the e-mail
    # (folded to lower case by the caller) is taken.
    # `at`: its time, as `RecordStore.create` takes it.
    async def create_user(self, email: str, fields: Mapping[str, Any], password_hash: str,
                          created_by: str | None = None, *,
                          at: datetime | None = None) -> Change: ...
    # (user id, password hash) of the user with this e-mail, or None.
    async def credential(self, email: str) -> tuple[str, str] | None: ...
    async def create_token(self, hash: str, user_id: str, at: datetime,
                           expires_at: datetime) -> None: ...
    async def find_token(self, hash: str) -> Session | None: ...
    async def touch_token(self, hash: str, at: datetime) -> None: ...
    # Whether there was such a token; `committed` is called once the revocation commits
    # (at once outside a run's transaction, never if it rolls back).
    async def revoke_token(self, hash: str,
                           committed: Callable[[], None] | None = None) -> bool: ...
    # Delete the tokens past their lifetime or unused since `idle_since`, and the reset
    # tokens past theirs; how many.
    async def purge_tokens(self, now: datetime, idle_since: datetime) -> int: ...
    # (e-mail, password hash) of a user who may log in (whose record exists, not disabled).
    async def user_credential(self, user_id: str) -> tuple[str, str] | None: ...
    # A user's password (an argon2id hash): its log-in's, or a new log-in under `email` (the
    # e-mail its record shows, folded) for a user who had none; DuplicateError when another
    # user's log-in holds that e-mail.
    async def set_password(self, user_id: str, email: str, password_hash: str) -> None: ...
    # Delete every token of the user but `keep` (a hash; None: every one); the hashes
    # deleted, each told to `committed` once the revocation commits.
    async def revoke_user_tokens(self, user_id: str, keep: str | None = None,
                                 committed: Callable[[str], None] | None = None
                                 ) -> list[str]: ...
    async def create_reset_token(self, hash: str, user_id: str, at: datetime,
                                 expires_at: datetime) -> None: ...
    # The user of a reset token still valid at `now`, or None. A token is used once: it is
    # deleted as it is read, expired or not, and a valid one takes its user's others along.
    async def use_reset_token(self, hash: str, now: datetime) -> str | None: ...
    # Refuse the user's log-ins from now on and delete its tokens; whether it was enabled.
    async def disable_user(self, user_id: str, at: datetime,
                           committed: Callable[[str], None] | None = None) -> bool: ...
    # Let a disabled user log in again (its tokens went with the disable); whether it was.
    async def enable_user(self, user_id: str) -> bool: ...
    # Users, oldest first, at most `limit`.
    async def list_accounts(self, limit: int) -> list[Account]: ...
    # A user by its id or its e-mail (folded), or None.
    async def find_account(self, key: str) -> Account | None: ...
