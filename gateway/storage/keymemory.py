"""The idempotency keys one process holds in memory (SQLite, where one process serves a
database): claims decided without a round trip, answers kept until the database has them."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.storage.interface import Claim

# The idempotency keys one process remembers at most (claims and answers), and the bytes of
# the answers' bodies among them; past either, the oldest answers already in the database
# are forgotten first (a key forgotten is read from the database again).
MEMORY_KEYS = 100_000
MEMORY_BYTES = 64 * 1024 * 1024
# The most keys a process notes as held by the database and not by its memory (a 64-bit
# prefix each, about 70 bytes); past it, any key memory lacks is looked up until the ones
# noted have expired.
STORED_KEYS = 1_000_000
RUNNING = Claim("running")


@dataclass(slots=True)
class HeldKey:
    """An idempotency key as a process knows it: its claim, then its answer."""

    owner: str
    lease_until: datetime
    expires_at: datetime
    answer: Claim | None = None  # the stored answer, once the run finished
    written: int = 0  # the number of the last write of it handed to the database


class KeyMemory:
    """The idempotency keys a process claimed, answered or read, oldest first, bounded by
    `most` keys and `most_bytes` of answers. A key is forgotten only once it is done and its
    last write is in the database (`written` at most `committed`). `stored` notes the keys
    the database may hold and memory does not (a prefix of each: one that matches by chance
    costs a needless read), at most `most_stored`; past that (or before they were loaded) it
    is None, and any key memory lacks may be in the database until `horizon`, the latest
    expiry it may hold."""

    def __init__(self, most: int = MEMORY_KEYS, most_bytes: int = MEMORY_BYTES,
                 most_stored: int = STORED_KEYS) -> None:
        self.keys: collections.OrderedDict[tuple[str, str], HeldKey] = \
            collections.OrderedDict()
        self.most, self.most_bytes = most, most_bytes
        self.bytes = 0
        self.committed = 0
        self.most_stored = most_stored
        self.stored: set[int] | None = None
        self.horizon: datetime | None = None

    def load(self, rows: Sequence[tuple[str, str, datetime]]) -> None:
        """The keys the database holds (`most_stored` + 1 at most, latest expiry first)."""
        self.stored = {_noted(slot[:2]) for slot in rows}
        self.horizon = rows[0][2] if rows else None
        if len(rows) > self.most_stored:
            self.stored = None

    def maybe_stored(self, slot: tuple[str, str], now: datetime) -> bool:
        """Whether the database may hold a key memory lacks (else it is surely free)."""
        if self.stored is not None:
            return _noted(slot) in self.stored
        if self.horizon is not None and self.horizon <= now:
            self.stored = set()  # everything noted has expired: start afresh
            return False
        return True

    @staticmethod
    def decide(held: HeldKey | None, now: datetime) -> Claim | None:
        """What holds the key at `now`: its answer, `RUNNING`, or None (free to claim)."""
        if held is None:
            return None
        if held.answer is not None:
            return held.answer if held.expires_at > now else None
        return RUNNING if held.lease_until > now else None

    def hold(self, slot: tuple[str, str], held: HeldKey) -> None:
        self.drop(slot)
        self.keys[slot] = held
        if held.answer is not None:
            self.bytes += len(held.answer.body)
        if len(self.keys) > self.most or self.bytes > self.most_bytes:
            self._shrink()

    def finish(self, slot: tuple[str, str], owner: str, answer: Claim) -> bool:
        held = self.keys.get(slot)
        if held is None or held.owner != owner or held.answer is not None:
            return False
        held.answer = answer
        self.bytes += len(answer.body)
        self.keys.move_to_end(slot)
        return True

    def drop(self, slot: tuple[str, str], owner: str | None = None) -> bool:
        held = self.keys.get(slot)
        if held is None or (owner is not None and (held.owner != owner or held.answer)):
            return False
        del self.keys[slot]
        if held.answer is not None:
            self.bytes -= len(held.answer.body)
        return True

    def purge(self, now: datetime) -> None:
        for slot in [s for s, held in self.keys.items() if held.expires_at <= now]:
            self.drop(slot)

    def _shrink(self) -> None:
        excess, excess_bytes = len(self.keys) - self.most, self.bytes - self.most_bytes
        gone = []
        for slot, held in self.keys.items():
            if excess <= 0 and excess_bytes <= 0:
                break
            if held.answer is None or held.written > self.committed:
                continue  # running, or not in the database yet
            gone.append(slot)
            excess, excess_bytes = excess - 1, excess_bytes - len(held.answer.body)
            self._forget(slot, held.expires_at)
        for slot in gone:
            self.drop(slot)

    def _forget(self, slot: tuple[str, str], expires_at: datetime) -> None:
        if self.horizon is None or expires_at > self.horizon:
            self.horizon = expires_at
        if self.stored is not None:
            self.stored.add(_noted(slot))
            if len(self.stored) > self.most_stored:
                self.stored = None


def _noted(slot: tuple[str, str]) -> int:
    """A key's note: its 64-bit hash in this process (a collision costs one needless read)."""
    return hash(slot)
