"""The idempotency role: keys claimed by runs (`Claim`, `IdempotencyStore`) and rate-limit
counters (`RateCounter`)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Claim:
    """What claiming an idempotency key found: `claimed` (the caller runs and then calls
    `finish` or `release`), `running` (another request holds it, within its lease) or
    `done` (the stored answer: `status`, `headers`, `body`)."""

    state: str
    status: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


# Why an idempotent run's writes were not kept (`IdempotencyStore.fence`).
LOST_KEY = ("another request with the same idempotency key took it over while this one ran "
            "(its lease, the run's time limit, had ended): what it wrote was not kept; retry "
            "later for that request's answer")


class IdempotencyStore(Protocol):
    """Idempotency keys per workflow (`scope`), claimed atomically across instances. A claim
    holds its key until `lease_until` (a crashed run's key frees itself then), an answer
    until `expires_at`. Keys are hashed by the caller, so they have a bounded size."""

    async def claim(self, scope: str, key: str, owner: str, now: datetime,
                    lease_until: datetime, expires_at: datetime) -> Claim: ...
    # Keep the answer of the claim `owner` holds (nothing when it lost the key meanwhile),
    # until `expires_at`: handed over at once, and stored with a coming batch (a repeat of
    # the key meanwhile is answered from it). What the caller awaits before it answers, if
    # anything: the store's catching up, when it is far behind (requests then go at the
    # database's pace). Once called, the key is the answer's, whatever becomes of the wait.
    def finish(self, scope: str, key: str, owner: str, status: int,
               headers: Mapping[str, str], body: bytes,
               expires_at: datetime) -> Awaitable[None] | None: ...
    # Give the key up, so that the next request with it runs (the run failed).
    async def release(self, scope: str, key: str, owner: str) -> None: ...
    # In the run's transaction, as it commits: the claim `owner` holds, kept until
    # `lease_until` (the answer's storing); `KeyTakenError` when another claim took the
    # key (the run's lease ended), which rolls back what the run wrote.
    async def fence(self, scope: str, key: str, owner: str, lease_until: datetime) -> None: ...
    # Delete the answers expired at `now`; how many (SQLite keeps every answer a key was
    # given, and its newest answer whatever its age; PostgreSQL a key's last).
    async def purge_keys(self, now: datetime) -> int: ...


class RateCounter(Protocol):
    """Rate-limit counters shared by every instance of the gateway: one per caller and
    fixed window (`bucket`, the window's number)."""

    # Count one call; the calls counted in this window so far, this one included. The
    # counter may be deleted after `expires_at` (the end of its window).
    async def hit(self, scope: str, who: str, bucket: int, expires_at: datetime) -> int: ...
    # Delete the counters of windows that ended; how many.
    async def purge_counters(self, now: datetime) -> int: ...
