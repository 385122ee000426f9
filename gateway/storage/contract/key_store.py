"""The admin API keys role: `ApiKey` and `KeyStore`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An admin API key as it is kept: never the key itself."""

    label: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class KeyStore(Protocol):
    """Admin API keys, kept as a SHA-256 of the key (a key is 256 random bits: a fast hash
    is as safe as a slow one, and a lookup by hash needs no comparison in Python)."""

    # Raises DuplicateError when the label is taken (by a key revoked or not).
    async def create_key(self, label: str, hash: str, at: datetime) -> None: ...
    async def list_keys(self) -> list[ApiKey]: ...
    # False when there is no such key, or it was revoked already.
    async def revoke_key(self, label: str, at: datetime) -> bool: ...
    # The key with this hash, unless revoked.
    async def find_key(self, hash: str) -> ApiKey | None: ...
    async def touch_key(self, hash: str, at: datetime) -> None: ...
