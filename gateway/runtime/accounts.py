"""Users' accounts: sign-up, log-in, log-out and session tokens.

Passwords are hashed with argon2id (argon2-cffi; OWASP's parameters: 19 MiB, 2 passes, one
lane) on a thread, at most `HASHING_AT_ONCE` at a time so that a burst of log-ins cannot
take all the memory. A token is 256 random bits shown once; the store keeps its SHA-256. A
token expires after its lifetime (`tokens.lifetime`, or `tokens.remember_lifetime` when the
caller asked to be remembered) and lapses when unused for `tokens.idle_lapse`; each use
moves the lapse on, never past the lifetime.

Failed log-ins are slowed per e-mail address and bounded per client address, attempts in
flight counted (`Logins`, over `login_throttle`); in each process, kept across reloads by the
app. A log-out is told to whoever caches tokens in the process (`on_logout`).

Account changes (Bubble's account actions): a user's new e-mail or password, checked against
the current password unless the run is privileged; a temporary password; a password reset
token (256 random bits, kept as its SHA-256, used once, before it expires, by its own user);
the user's other sessions ended. A new password ends every other session of the user (unless
asked not to); a reset or a temporary password ends all of them. Each is slowed and bounded
like a log-in: checks of a current password and uses of a reset token count failures per
e-mail and per client network; reset e-mails count per e-mail address (`RESETS_PER_EMAIL`)
and per client network, whatever the address.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.core.clock import Clock, utc_now
from gateway.core.errors import (
    DuplicateError,
    InvalidDataError,
    InvalidLoginError,
    InvalidResetTokenError,
    PasswordTooShortError,
    UsedEmailError,
)
from gateway.core.settings import Settings
from gateway.runtime.forwarded import network
from gateway.runtime.login_throttle import FailureBudget, Slowdown, Turn
from gateway.storage.contract import Change, Session, UserStore

HASHING_AT_ONCE = 2
MAX_PASSWORD = 1024  # characters; longer is refused before any hashing
MAX_EMAIL = 320  # characters of an e-mail address (RFC 5321's bound)
TOUCH_EVERY = 60.0  # seconds: a token's last use is kept to the minute
# Failed log-ins per e-mail address: after FREE_FAILURES, each attempt waits twice as long
# as the one before, up to MAX_DELAY; forgotten after FAILURE_MEMORY seconds. Attempts on
# one address run one at a time, at most QUEUE waiting (`gateway.runtime.login_throttle.Slowdown`).
FREE_FAILURES = 3  # failed log-ins on one e-mail before each attempt waits
MAX_DELAY = 8.0  # seconds: the longest wait before a log-in attempt
FAILURE_MEMORY = 900.0  # seconds failed log-ins on one e-mail are remembered
QUEUE = 4  # log-in attempts on one e-mail waiting; more get 429 RATE_LIMITED
MAX_TRACKED = 10_000
RESETS_PER_EMAIL = 3  # reset e-mails to one address per RESET_EMAIL_WINDOW
RESET_EMAIL_WINDOW = 900.0  # seconds
TEMP_PASSWORD_BYTES = 12  # random bytes of a temporary password (16 characters)

_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
# Checked against when the e-mail is unknown, so that both failures take the same time.
_DECOY = _HASHER.hash(secrets.token_urlsafe(16))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def fold_email(value: Any) -> str:
    """An e-mail address as it is kept and looked up: trimmed and in lower case. One with
    a control or invisible character (a NUL, which PostgreSQL cannot hold; a zero-width
    space) or a space is no address."""
    email = str(value or "").strip().lower()
    if (not email or "@" not in email or len(email) > MAX_EMAIL or not email.isprintable()
            or " " in email):
        raise InvalidDataError("The email is not a valid e-mail address")
    return email


class Logins:
    """What slows and bounds failed log-ins in one process: per e-mail address (`emails`)
    and per client network, across e-mail addresses (`addresses`, within
    `tokens.address_failures`)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.emails = Slowdown(FREE_FAILURES, MAX_DELAY, memory=FAILURE_MEMORY, queue=QUEUE,
                               tracked=MAX_TRACKED, what="log-ins for this e-mail address",
                               monotonic=monotonic, sleep=sleep)
        self.addresses = FailureBudget(monotonic=monotonic)
        self.resets = FailureBudget(monotonic=monotonic)  # reset e-mails per e-mail address


class Accounts:
    """Sign-up, log-in, log-out and sessions over a `UserStore`."""

    def __init__(self, users: UserStore, settings: Settings, clock: Clock = utc_now,
                 monotonic: Callable[[], float] = time.monotonic,
                 logins: Logins | None = None) -> None:
        self.users = users
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.logins = logins or Logins(monotonic)
        # Called with a token's hash once its log-out has committed (the credential cache's).
        self.on_logout: Callable[[str], None] | None = None
        self._hashing = asyncio.Semaphore(HASHING_AT_ONCE)
        self._touched: dict[str, float] = {}

    async def signup(self, email: Any, password: Any, fields: Mapping[str, Any],
                     remember: bool, created_by: str | None) -> tuple[Change, dict[str, Any]]:
        change = await self.create_user(email, password, fields, created_by)
        return change, await self._session(change.id, remember)

    async def create_user(self, email: Any, password: Any, fields: Mapping[str, Any],
                          created_by: str | None) -> Change:
        """A user record with a password (`create_thing`, the Data API, the command line)."""
        folded = fold_email(email)
        text = self._password(password)
        hashed = await self._run_hasher(_HASHER.hash, text)
        try:
            return await self.users.create_user(folded, fields, hashed, created_by,
                                                at=self.clock())
        except DuplicateError as exc:
            raise UsedEmailError("This email is already in use") from exc

    async def login(self, email: Any, password: Any, remember: bool,
                    client: str | None = None) -> dict[str, Any]:
        """A session for the user with this e-mail and password. `client`: the caller's
        address, whose failures are bounded too (None: not counted)."""
        folded = fold_email(email)
        text = str(password or "")
        too_long = len(text) > MAX_PASSWORD  # no password kept is longer: a wrong one
        settings = self.settings
        async with self.logins.addresses.turn(
                None if client is None else network(client), settings.address_failures,
                settings.address_failures_per.total_seconds()) as by_address, \
                self.logins.emails.turn(folded) as by_email:
            found = await self.users.credential(folded)
            user_id, hashed = found if found is not None else (None, _DECOY)
            ok = (await self._run_hasher(_verify, hashed, text[:MAX_PASSWORD])
                  and not too_long and user_id is not None)
            by_address.ok = by_email.ok = ok
        if not ok or user_id is None:
            raise InvalidLoginError("We didn't find an account with those login credentials")
        return await self._session(user_id, remember)

    async def check_password(self, user_id: str, password: Any,
                             client: str | None = None) -> str:
        """The e-mail of the user, whose current password this is (slowed like a log-in);
        else `InvalidLoginError`."""
        found = await self.users.user_credential(user_id)
        email, hashed = found if found is not None else (f"id:{user_id}", _DECOY)
        text = str(password or "")
        async with self.turns(email, client) as (by_address, by_email):
            ok = (await self._run_hasher(_verify, hashed, text[:MAX_PASSWORD])
                  and len(text) <= MAX_PASSWORD and found is not None)
            by_address.ok = by_email.ok = ok
        if not ok or found is None:
            raise InvalidLoginError("The current password is wrong")
        return email

    async def change_password(self, user_id: str, email: str, password: Any) -> None:
        """Set the user's password (a log-in under `email`, folded, for a user who had
        none)."""
        hashed = await self._run_hasher(_HASHER.hash, self._password(password))
        try:
            await self.users.set_password(user_id, email, hashed)
        except DuplicateError as exc:
            raise UsedEmailError("This email is already in use") from exc

    async def revoke_others(self, user_id: str, keep: str | None) -> list[str]:
        """Revoke every token of the user but `keep`; told to the token cache at commit."""
        return await self.users.revoke_user_tokens(user_id, keep, self.on_logout)

    def temp_password(self) -> str:
        """A random password, as long as the settings ask at least."""
        size = max(TEMP_PASSWORD_BYTES, self.settings.min_password_length)
        return secrets.token_urlsafe(size)

    async def reset_token(self, email: Any, lifetime: float,
                          client: str | None = None) -> tuple[str, str] | None:
        """(user id, token) of a new reset token for the user with this e-mail, or None when
        there is no such user who may log in; bounded per e-mail and per client network
        whether or not the user exists, so that the bound tells nothing either."""
        folded = fold_email(email)
        settings = self.settings
        async with self.logins.addresses.turn(
                None if client is None else network(client), settings.address_failures,
                settings.address_failures_per.total_seconds()) as by_address, \
                self.logins.resets.turn(folded, RESETS_PER_EMAIL, RESET_EMAIL_WINDOW) as sent:
            by_address.ok = sent.ok = False  # every request counts
            found = await self.users.credential(folded)
            if found is None:
                return None
            token, now = secrets.token_urlsafe(32), self.clock()
            await self.users.create_reset_token(token_hash(token), found[0], now,
                                                now + timedelta(seconds=lifetime))
        return found[0], token

    async def reset_password(self, token: Any, password: Any, email: Any,
                             client: str | None = None) -> str:
        """The user whose reset token this is, given `password`: the token is used once,
        before it expires, and, when `email` is given, only by that e-mail's user; every
        token of the user is revoked."""
        text = self._password(password)
        settings = self.settings
        async with self.logins.addresses.turn(
                None if client is None else network(client), settings.address_failures,
                settings.address_failures_per.total_seconds()) as by_address:
            user_id = await self.users.use_reset_token(token_hash(str(token or "")),
                                                       self.clock())
            found = None if user_id is None else await self.users.user_credential(user_id)
            if found is not None and email not in (None, "") and fold_email(email) != found[0]:
                found = None
            by_address.ok = found is not None
        if user_id is None or found is None:
            raise InvalidResetTokenError(
                "This password reset link is not valid: it was used, it expired, or it is "
                "not for this account")
        await self.change_password(user_id, found[0], text)
        await self.revoke_others(user_id, None)
        return user_id

    def turns(self, email: str, client: str | None
              ) -> AbstractAsyncContextManager[tuple[Turn, Turn]]:
        """An attempt's turns on the e-mail and on the client's network, as a log-in's."""
        settings = self.settings
        return _both(self.logins.addresses.turn(
            None if client is None else network(client), settings.address_failures,
            settings.address_failures_per.total_seconds()), self.logins.emails.turn(email))

    async def logout(self, digest: str | None) -> bool:
        if digest is None:
            return False
        told = self.on_logout
        return await self.users.revoke_token(
            digest, None if told is None else lambda: told(digest))

    async def user_of(self, token: str) -> str | None:
        """The user whose valid token this is, or None; a use moves its idle lapse on."""
        digest = token_hash(token)
        session = await self.users.find_token(digest)
        if session is None or not self._alive(session):
            return None
        now = self.monotonic()
        if now - self._touched.get(digest, -TOUCH_EVERY) >= TOUCH_EVERY:
            if len(self._touched) >= MAX_TRACKED:
                self._touched.clear()
            self._touched[digest] = now
            await self.users.touch_token(digest, self.clock())
        return session.user_id

    def _alive(self, session: Session) -> bool:
        now = self.clock()
        return now < session.expires_at and now < session.last_used_at + self.settings.idle_lapse

    def _password(self, password: Any) -> str:
        text = str(password or "")
        if len(text) < self.settings.min_password_length:
            raise PasswordTooShortError(
                f"The password must be at least {self.settings.min_password_length} characters")
        if len(text) > MAX_PASSWORD:
            raise InvalidDataError(f"The password is longer than {MAX_PASSWORD} characters")
        return text

    async def _session(self, user_id: str, remember: bool) -> dict[str, Any]:
        lifetime = self.settings.remember_lifetime if remember else self.settings.token_lifetime
        token = secrets.token_urlsafe(32)
        now = self.clock()
        await self.users.create_token(token_hash(token), user_id, now, now + lifetime)
        return {"user_id": user_id, "token": token, "expires": int(lifetime.total_seconds())}

    async def _run_hasher(self, work: Callable[..., Any], *args: Any) -> Any:
        async with self._hashing:
            return await asyncio.to_thread(work, *args)


@contextlib.asynccontextmanager
async def _both(first: AbstractAsyncContextManager[Turn],
                second: AbstractAsyncContextManager[Turn]) -> AsyncIterator[tuple[Turn, Turn]]:
    async with first as one, second as two:
        yield one, two


def _verify(hashed: str, password: str) -> bool:
    try:
        return _HASHER.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False
