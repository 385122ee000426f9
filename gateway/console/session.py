"""The console's sessions: signed cookies, CSRF tokens, and slowed sign-in attempts.

A session is a cookie holding the SHA-256 of the admin key that signed in (never the key),
when it ends, and a random session id, signed with HMAC-SHA-256. The server keeps nothing
per session but the ids signed out before their end. Every request checks the key again
(through `Authenticator`, cached for a second), so revoking the key ends its sessions.
A form's CSRF token is an HMAC of the session id: it cannot be made without the signing key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.runtime.login_throttle import Slowdown

COOKIE = "gateway_console"
PRE_COOKIE = "gateway_console_signin"  # the sign-in form's own CSRF nonce, before a session
MIN_SECRET = 32  # characters of a `console.secret` worth signing with
MAX_COOKIE = 1024
FREE_FAILURES = 5  # wrong keys from one address before sign-in is slowed
MAX_DELAY = 10.0  # seconds
FAILURE_MEMORY = 900.0  # seconds an address's failures are remembered
MAX_TRACKED = 10_000  # addresses tracked at once (bounded by construction)
MAX_ENDED = 100_000  # signed-out sessions remembered until their end


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_key(secret: str | None) -> bytes:
    """The key cookies are signed with: derived from the named secret, or random."""
    if secret is None or len(secret) < MIN_SECRET:
        return secrets.token_bytes(32)
    return hmac.new(secret.encode(), b"gateway console session", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in admin: the hash of its key, when the session ends (epoch seconds), and
    the session's own id."""

    key_hash: str
    expires: float
    id: str


class Signer:
    """Signs sessions into cookie values and reads them back; makes CSRF tokens."""

    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self.clock = clock
        self._ended: dict[str, float] = {}

    def _mac(self, purpose: str, text: str) -> str:
        return _b64(hmac.new(self.key, f"{purpose}|{text}".encode(), hashlib.sha256).digest())

    def issue(self, key_hash: str, lifetime: float) -> tuple[Session, str]:
        session = Session(key_hash, self.clock() + lifetime, secrets.token_urlsafe(16))
        body = _b64(json.dumps({"h": session.key_hash, "x": session.expires,
                                "s": session.id}).encode())
        return session, f"{body}.{self._mac('session', body)}"

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie holds; None when it is missing, forged, tampered with,
        expired, or signed out."""
        if not cookie or len(cookie) > MAX_COOKIE or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            data: Any = json.loads(_unb64(body))
            session = Session(str(data["h"]), float(data["x"]), str(data["s"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= self.clock() or session.id in self._ended:
            return None
        return session

    def end(self, session: Session) -> None:
        """Sign a session out: its cookie opens nothing more in this process."""
        now = self.clock()
        if len(self._ended) >= MAX_ENDED:
            self._ended = {sid: end for sid, end in self._ended.items() if end > now}
        if len(self._ended) < MAX_ENDED:
            self._ended[session.id] = session.expires

    def csrf(self, session_id: str) -> str:
        return self._mac("csrf", session_id)

    def signin_token(self, nonce: str) -> str:
        return self._mac("sign-in", nonce)

    def check(self, expected: str, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def throttle(monotonic: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> Slowdown:
    """Sign-in attempts from one address, one at a time, slowed after `FREE_FAILURES` wrong
    keys: each further attempt waits twice as long as the last (from 0.25 s up to
    `MAX_DELAY`), and more than a few at once are refused (`gateway.runtime.login_throttle`)."""
    return Slowdown(FREE_FAILURES, MAX_DELAY, memory=FAILURE_MEMORY, tracked=MAX_TRACKED,
                    what="sign-ins from this address", monotonic=monotonic, sleep=sleep)
