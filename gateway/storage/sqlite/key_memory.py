"""The idempotency keys one process holds in memory (SQLite, where one process serves a
database): claims decided without a round trip, answers kept until the database has them.

A key is held as one plain tuple (`Held`) of strings and numbers, times as Unix seconds:
a request costs the memory one tuple, not objects the garbage collector walks for as long
as they are kept."""

from __future__ import annotations

import collections

from gateway.core.encoding import loads
from gateway.storage.contract import Claim

# The idempotency keys one process remembers at most (claims and answers, about 1 KiB each
# with a small answer), and the bytes of the answers' bodies among them; past either, the
# oldest answers already in the database are forgotten first, an eighth of the bound at a
# time (a key forgotten is read from the database again). A worker is meant to stay under
# 64 MiB in all.
MEMORY_KEYS = 4096
MEMORY_BYTES = 8 * 1024 * 1024
RUNNING = Claim("running")

Slot = tuple[str, str]  # the workflow and the key
# A key as a process knows it: `(owner, lease_until, expires_at, status, headers, body,
# written)`; `status` 0 while its run is going, then its answer (`headers` as JSON), and
# `written` the number of the last write of it handed to the database.
Held = tuple[str, float, float, int, str, bytes, int]


def claimed(owner: str, lease_until: float, expires_at: float) -> Held:
    return (owner, lease_until, expires_at, 0, "", b"", 0)


def answered(expires_at: float, status: int, headers: str, body: bytes,
             written: int = 0) -> Held:
    return ("", expires_at, expires_at, status, headers, body, written)


class KeyMemory:
    """The idempotency keys a process claimed, answered or read, oldest first, bounded by
    `most` keys and `most_bytes` of answers. A key is forgotten only once it is done and its
    last write is in the database (`written` at most `committed`). Any key memory lacks may
    be in the database until `horizon`, the latest expiry it may hold (None: the database
    holds no key that has not expired)."""

    def __init__(self, most: int = MEMORY_KEYS, most_bytes: int = MEMORY_BYTES) -> None:
        self.keys: collections.OrderedDict[Slot, Held] = collections.OrderedDict()
        self.most, self.most_bytes = most, most_bytes
        self.bytes = 0
        self.committed = 0
        self.horizon: float | None = None
        # the write the oldest answer waits for, when forgetting stopped at it: nothing can
        # be forgotten before `committed` reaches it, so new keys skip the walk until then
        self.waiting = 0

    def load(self, horizon: float | None) -> None:
        """The latest expiry of the keys the database holds (None when it holds none)."""
        self.horizon = horizon

    def maybe_stored(self, now: float) -> bool:
        """Whether the database may hold a key memory lacks (else it is surely free)."""
        horizon = self.horizon
        if horizon is not None and horizon <= now:
            self.horizon = horizon = None  # everything forgotten has expired
        return horizon is not None

    @staticmethod
    def decide(held: Held | None, now: float) -> Claim | None:
        """What holds the key at `now`: its answer, `RUNNING`, or None (free to claim)."""
        if held is None:
            return None
        _, lease_until, expires_at, status, headers, body, _ = held
        if status:
            return Claim("done", status, loads(headers), body) if expires_at > now else None
        return RUNNING if lease_until > now else None

    def hold(self, slot: Slot, held: Held) -> None:
        keys = self.keys
        if slot in keys:
            self.drop(slot)
        keys[slot] = held
        if held[3]:
            self.bytes += len(held[5])
        if len(keys) > self.most or self.bytes > self.most_bytes:
            self._shrink()

    def finish(self, slot: Slot, owner: str, status: int, headers: str, body: bytes,
               written: int) -> bool:
        """Keep the answer of the claim `owner` holds (False when it holds none)."""
        keys = self.keys
        held = keys.get(slot)
        if held is None or held[0] != owner or held[3]:
            return False
        keys[slot] = (owner, held[1], held[2], status, headers, body, written)
        self.bytes += len(body)
        keys.move_to_end(slot)
        return True

    def extend(self, slot: Slot, owner: str, lease_until: float) -> bool:
        """Keep the claim `owner` holds on the key until `lease_until` (False when it holds
        none: another claim took the key once its lease ended)."""
        held = self.keys.get(slot)
        if held is None or held[0] != owner or held[3]:
            return False
        self.keys[slot] = (owner, max(held[1], lease_until), *held[2:])
        return True

    def drop(self, slot: Slot, owner: str | None = None) -> bool:
        held = self.keys.get(slot)
        if held is None or (owner is not None and (held[0] != owner or held[3])):
            return False
        del self.keys[slot]
        self.bytes -= len(held[5])
        return True

    def purge(self, now: float) -> None:
        for slot in [s for s, held in self.keys.items() if held[2] <= now]:
            self.drop(slot)

    def _shrink(self) -> None:
        """Forget the oldest answers the database holds, down to seven eighths of the
        bounds (a walk every eighth of them, not one per key). Keys are in the order they
        were claimed or answered: a running claim met on the way goes to the end (it is
        looked at again later), and the first answer not yet committed ends the walk (the
        ones after it were answered later still), so each walk costs the keys it forgets and
        the running claims it passes, never a walk over the whole memory."""
        if self.waiting > self.committed:
            return  # the oldest answer is still on its way to the database
        keys = self.keys
        excess = len(keys) - self.most + self.most // 8
        excess_bytes = self.bytes - self.most_bytes + self.most_bytes // 8
        forgotten: list[tuple[Slot, float]] = []
        running: list[Slot] = []
        for slot, (_, _, expires_at, status, _, body, written) in keys.items():
            if excess <= 0 and excess_bytes <= 0:
                break
            if not status:
                running.append(slot)
            elif written > self.committed:
                self.waiting = written
                break  # not in the database yet: the memory stays over its bounds a while
            else:
                forgotten.append((slot, expires_at))
                excess, excess_bytes = excess - 1, excess_bytes - len(body)
        for slot in running:
            keys.move_to_end(slot)
        for slot, _ in forgotten:
            self.bytes -= len(keys.pop(slot)[5])
        self._forget(forgotten)

    def behind(self) -> bool:
        """Whether memory holds more than twice its bound of keys or of bytes: the database's
        writes lag so far behind that answers should wait for them (`SqliteIdempotency`)."""
        return len(self.keys) > 2 * self.most or self.bytes > 2 * self.most_bytes

    def _forget(self, forgotten: list[tuple[Slot, float]]) -> None:
        if not forgotten:
            return
        latest = max(expires_at for _, expires_at in forgotten)
        if self.horizon is None or latest > self.horizon:
            self.horizon = latest
