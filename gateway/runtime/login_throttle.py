"""Failed attempts (log-ins, console sign-ins) slowed and bounded, concurrent ones included.

A delay decided when an attempt starts lets parallel guesses all start before any of them
has failed: 150 at once ran as if none had. Here an attempt in flight counts before it ends.

`Slowdown`, per key (an e-mail address, a client address): attempts run one at a time, each
after the delay the key's failures call for when the one before it ended (none for the first
`free` failures, then twice the last, from 0.25 s up to `most`). At most `queue` attempts
wait behind the one running; more are refused at once (429 RATE_LIMITED). Failures are
forgotten `memory` seconds after the last one, or at a success.

`FailureBudget`, per client network (across e-mail addresses): at most `most` failures per
`per`, as a bucket that empties at that rate; an attempt in flight holds a failure's room
until it ends, so parallel guesses cannot overrun it. An attempt beyond it is refused at
once, saying when to try again.

Both keep their state in the process (per instance), bounded to `tracked` keys: keys with
attempts in flight are never forgotten, then those being slowed are kept longest.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from gateway.core.errors import RateLimitedError

QUEUE = 4  # attempts on one key that may wait behind the one running
MAX_TRACKED = 10_000
FIRST_DELAY = 0.25  # seconds, after the free failures


@dataclass(slots=True)
class Turn:
    """One attempt: its caller sets `ok` (True: it succeeded, False: it failed); left None
    (the attempt could not be judged: the database failed, say) it counts as neither."""

    ok: bool | None = None


@dataclass(slots=True)
class _Key:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    attempts: int = 0  # in flight: the one running and those waiting for it
    failures: int = 0
    last: float = 0.0


class Slowdown:
    """Attempts on one key one at a time, slowed after failures (see the module)."""

    def __init__(self, free: int, most: float, *, memory: float = 900.0, queue: int = QUEUE,
                 tracked: int = MAX_TRACKED, what: str = "attempts",
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.free, self.most, self.memory, self.queue = free, most, memory, queue
        self.what = what  # what a refusal says there are too many of
        self.tracked = tracked
        self.monotonic = monotonic
        self.sleep = sleep  # how an attempt waits its delay (the clock's, in tests)
        self._keys: dict[str, _Key] = {}

    def in_flight(self, key: str) -> int:
        """Attempts on `key` running or waiting for their turn."""
        entry = self._keys.get(key)
        return 0 if entry is None else entry.attempts

    def delay_for(self, key: str) -> float:
        """How long the next attempt on `key` waits, after its recent failures."""
        entry = self._keys.get(key)
        if entry is None or not self._remembered(entry):
            return 0.0
        if entry.failures < self.free:
            return 0.0
        return float(min(FIRST_DELAY * 2 ** (entry.failures - self.free), self.most))

    def failed(self, key: str) -> None:
        entry = self._entry(key)
        self._remembered(entry)
        entry.failures += 1
        entry.last = self.monotonic()
        self._tidy(key, entry)

    def succeeded(self, key: str) -> None:
        entry = self._keys.get(key)
        if entry is not None:
            entry.failures = 0
            self._tidy(key, entry)

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[Turn]:
        """The attempt's turn on `key`: after the attempts before it, and its delay. Raises
        `RateLimitedError` at once when `queue` attempts wait already."""
        entry = self._entry(key)
        if entry.attempts > self.queue:
            wait = max(1, math.ceil(self.delay_for(key)) * (self.queue + 1))
            raise RateLimitedError(f"Too many {self.what} at once; try again in {wait} s",
                                   wait)
        entry.attempts += 1
        turn = Turn()
        try:
            async with entry.lock:
                delay = self.delay_for(key)
                if delay:
                    await self.sleep(delay)
                yield turn
                if turn.ok is not None:
                    (self.succeeded if turn.ok else self.failed)(key)
        finally:
            entry.attempts -= 1
            self._tidy(key, entry)

    def _remembered(self, entry: _Key) -> bool:
        """Whether the key's failures are recent enough to count; forgets them if not."""
        if entry.failures and self.monotonic() - entry.last > self.memory:
            entry.failures = 0
        return entry.failures > 0

    def _entry(self, key: str) -> _Key:
        entry = self._keys.get(key)
        if entry is None:
            if len(self._keys) >= self.tracked:
                self._make_room()
            entry = self._keys[key] = _Key()
        return entry

    def _tidy(self, key: str, entry: _Key) -> None:
        if not entry.attempts and not entry.failures and self._keys.get(key) is entry:
            del self._keys[key]

    def _make_room(self) -> None:
        """Room for one more key, without forgetting keys being slowed (failures on many
        other keys would otherwise lift their delay), nor any with attempts in flight: the
        others go first; if every one is slowed, the older half of those at rest."""
        self._keys = {k: e for k, e in self._keys.items()
                      if e.attempts or (self._remembered(e) and e.failures >= self.free)}
        if len(self._keys) >= self.tracked:
            resting = sorted((e.last, k) for k, e in self._keys.items() if not e.attempts)
            for _, key in resting[:len(resting) // 2 + 1]:
                del self._keys[key]


@dataclass(slots=True)
class _Bucket:
    level: float = 0.0  # failures not yet drained
    at: float = 0.0
    running: int = 0


class FailureBudget:
    """At most `most` failures per `per` seconds from one key, attempts in flight counted
    (see the module)."""

    def __init__(self, *, tracked: int = 100_000,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.tracked = tracked
        self.monotonic = monotonic
        self._buckets: dict[str, _Bucket] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: str | None, most: int, per: float) -> AsyncIterator[Turn]:
        """An attempt from `key` (None: a caller with no address, not counted); raises
        `RateLimitedError` at once when it could take `key` past the budget."""
        turn = Turn()
        if key is None:
            yield turn
            return
        per = max(per, 0.001)
        bucket = self._bucket(key, most, per)
        over = bucket.level + bucket.running + 1 - most
        if over > 0:
            wait = max(1, math.ceil(over * per / most))
            raise RateLimitedError(
                f"Too many failed log-ins from this address; try again in {wait} s", wait)
        bucket.running += 1
        try:
            yield turn
            if turn.ok is False:
                self._drain(bucket, most, per)
                bucket.level += 1
        finally:
            bucket.running -= 1
            if not bucket.running and bucket.level <= 0 and self._buckets.get(key) is bucket:
                del self._buckets[key]

    def _drain(self, bucket: _Bucket, most: int, per: float) -> None:
        now = self.monotonic()
        bucket.level = max(0.0, bucket.level - (now - bucket.at) * most / per)
        bucket.at = now

    def _bucket(self, key: str, most: int, per: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.tracked:
                self._make_room(most, per)
            bucket = self._buckets[key] = _Bucket(at=self.monotonic())
        self._drain(bucket, most, per)
        return bucket

    def _make_room(self, most: int, per: float) -> None:
        """Room for one more key: those drained and at rest go first, then the emptier
        half of those at rest; none with attempts in flight."""
        for bucket in self._buckets.values():
            self._drain(bucket, most, per)
        self._buckets = {k: b for k, b in self._buckets.items() if b.running or b.level > 0}
        if len(self._buckets) >= self.tracked:
            resting = sorted((b.level, k) for k, b in self._buckets.items() if not b.running)
            for _, key in resting[:len(resting) // 2 + 1]:
                del self._buckets[key]
