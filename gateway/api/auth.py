"""Who a caller is (an admin API key, a user's token, or nobody), and the access level of
each workflow.

A key or a token is 256 random bits, URL-safe, shown once when it is made; the database keeps
only its SHA-256. A caller presents it as `Authorization: Bearer <token>` or, as Bubble allows,
as the `api_token` query parameter (which never reaches a template, a log or the run log).

Looking a credential up costs database reads, so answers are cached for `KEY_CACHE_SECONDS`:
a revoked key or a logged-out token stops working within that long on every instance sharing
the database, and at once in the process that revoked it (a log-out, once its run has
committed: `revoked`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from starlette.requests import Request

from gateway.core.clock import Clock, utc_now
from gateway.core.errors import ForbiddenError, UnauthorizedError
from gateway.runtime.accounts import Accounts
from gateway.runtime.context import ANONYMOUS, Identity
from gateway.runtime.model import Workflow
from gateway.storage.contract import KeyStore, RecordStore

KEY_CACHE_SECONDS = 1.0  # a revoked key or token is refused everywhere within this
KEY_CACHE_SIZE = 10_000
# Credentials revoked in this process are refused here at once, and remembered so for long
# enough that no lookup begun before the revocation can cache them as valid again.
MAX_REVOKED = 10_000
REVOKED_SECONDS = 60.0
TOUCH_EVERY = timedelta(minutes=1)  # `last used` is kept to the minute, not per request
MAX_CREDENTIAL = 512  # longer is no credential this gateway gave
API_TOKEN = "api_token"  # the query parameter that may carry a credential


def new_key() -> str:
    """A new admin key: 256 random bits, URL-safe text."""
    return secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header's value, if it is one."""
    scheme, _, bearer = header.partition(" ")
    return bearer.strip() or None if scheme.lower() == "bearer" else None


def is_bearer(header: str) -> bool:
    return bearer_token(header) is not None


def credential(request: Request) -> str | None:
    """The bearer token or `api_token` the request carries, if any."""
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            token = bearer_token(bytes(value).decode("latin-1"))
            if token is not None:
                return token
    if API_TOKEN.encode() not in request.scope.get("query_string", b""):
        return None  # the common case, without parsing the query string
    token = str(request.query_params.get(API_TOKEN) or "")
    return token or None


@dataclass(slots=True)
class _Cached:
    identity: Identity | None
    until: float  # time.monotonic()


class Authenticator:
    """Turns a credential into an `Identity`, and checks a workflow's access level."""

    def __init__(self, keys: KeyStore | None, clock: Clock = utc_now,
                 monotonic: Callable[[], float] = time.monotonic,
                 accounts: Accounts | None = None, records: RecordStore | None = None) -> None:
        self.keys = keys
        self.accounts = accounts
        self.records = records
        self.clock = clock
        self.monotonic = monotonic
        self._cache: dict[str, _Cached] = {}
        self._touched: dict[str, float] = {}
        self._revoked: dict[str, float] = {}  # hash -> until (monotonic)
        if accounts is not None:
            accounts.on_logout = self.revoked

    def revoked(self, digest: str) -> None:
        """A credential (by its SHA-256) whose revocation this process committed: refused
        here from now on, not after the cache's second (`REVOKED_SECONDS`; then the
        database, which no longer has it, answers as for any other)."""
        now = self.monotonic()
        self._cache.pop(digest, None)
        if len(self._revoked) >= MAX_REVOKED:
            self._revoked = {d: until for d, until in self._revoked.items() if until > now}
            if len(self._revoked) >= MAX_REVOKED:  # all recent: the older half goes
                self._revoked = dict(list(self._revoked.items())[MAX_REVOKED // 2:])
        self._revoked[digest] = now + REVOKED_SECONDS

    def _is_revoked(self, digest: str, now: float) -> bool:
        until = self._revoked.get(digest)
        if until is None:
            return False
        if until <= now:
            del self._revoked[digest]
            return False
        return True

    async def identify(self, token: str | None) -> Identity | None:
        """ANONYMOUS without a credential; None for one that is not (or no longer) valid."""
        if token is None:
            return ANONYMOUS
        if len(token) > MAX_CREDENTIAL or self.keys is None:
            return None
        digest = key_hash(token)
        now = self.monotonic()
        if self._revoked and self._is_revoked(digest, now):
            return None
        cached = self._cache.get(digest)
        if cached is not None and cached.until > now:
            return cached.identity
        identity = await self._lookup(token, digest)
        if self._revoked and self._is_revoked(digest, now):
            return None  # revoked while it was looked up
        if len(self._cache) >= KEY_CACHE_SIZE:
            self._cache.clear()  # bounded: garbage credentials cannot grow it
        self._cache[digest] = _Cached(identity, now + KEY_CACHE_SECONDS)
        if identity is not None and identity.kind == "admin":
            await self._touch(digest, now)
        return identity

    async def admin_of_hash(self, digest: str) -> Identity | None:
        """The admin whose key has this SHA-256 (what a console session keeps), or None once
        the key is revoked; cached like `identify`."""
        now = self.monotonic()
        if self._revoked and self._is_revoked(digest, now):
            return None
        cached = self._cache.get(digest)
        if cached is None or cached.until <= now:
            found = self.keys is not None and await self.keys.find_key(digest) is not None
            cached = _Cached(Identity("admin", token_hash=digest) if found else None,
                             now + KEY_CACHE_SECONDS)
            if len(self._cache) >= KEY_CACHE_SIZE:
                self._cache.clear()
            self._cache[digest] = cached
            if found:
                await self._touch(digest, now)
        identity = cached.identity
        return identity if identity is not None and identity.kind == "admin" else None

    async def _lookup(self, token: str, digest: str) -> Identity | None:
        assert self.keys is not None
        if await self.keys.find_key(digest) is not None:
            return Identity("admin", token_hash=digest)
        if self.accounts is None or self.records is None:
            return None
        user_id = await self.accounts.user_of(token)
        user = await self.records.get("user", user_id) if user_id else None
        if user is None:  # no such token, or its user was deleted
            return None
        return Identity("user", user_id, user=user, token_hash=digest)

    async def _touch(self, digest: str, now: float) -> None:
        if now - self._touched.get(digest, -1e18) >= TOUCH_EVERY.total_seconds():
            self._touched[digest] = now
            if self.keys is not None:
                await self.keys.touch_key(digest, self.clock())

    async def admit(self, workflow: Workflow, token: str | None) -> Identity:
        """The identity of the caller with `token` (see `credential`) if the workflow's
        access level lets it in; raises `UnauthorizedError` (401) or `ForbiddenError` (403)
        otherwise."""
        identity = await self.identify(token)
        if identity is None:  # a credential was given and is not valid, whatever the level
            raise UnauthorizedError("The API token is not valid (unknown, revoked or expired)")
        return admitted(workflow, identity)


def admitted(workflow: Workflow, identity: Identity) -> Identity:
    """`identity`, if the workflow's access level lets it in; raises otherwise."""
    if workflow.auth == "none":
        return identity
    if identity.kind == "anonymous":
        raise UnauthorizedError(f"The workflow {workflow.name} requires authentication")
    if workflow.auth == "admin" and identity.kind != "admin":
        raise ForbiddenError(f"The workflow {workflow.name} requires an admin API key")
    return identity
