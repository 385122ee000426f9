"""How recorded runs wait to be written in batches: `RunQueue`, a `Backlog` that counts
what it loses."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TypeVar

from gateway.storage.common.batching import Backlog
from gateway.storage.common.catalog import log

# Runs written per statement: large enough that the log costs little per run, small enough
# for SQLite's limit on a statement's variables and to never hold up a request for long.
RUN_BATCH = 500


DEFAULT_MAX_QUEUE = 10_000


WARN_SECONDS = 60.0
FULL = "the queue of runs to write is full"


R = TypeVar("R")


class RunQueue(Backlog[R]):
    """Recorded runs waiting to be written, oldest first, taken in batches, at most `limit`.

    One side adds (the event loop), the other takes (the SQLite writer thread or the
    PostgreSQL flusher task). A run that finds the queue full (the database is down or too
    slow) is dropped and counted, and so is one the database refuses even as its summary:
    `dropped` is the total since start, and the warning about it is logged at most once per
    `WARN_SECONDS`.
    """

    def __init__(self, limit: int = DEFAULT_MAX_QUEUE) -> None:
        super().__init__(limit)
        self.dropped = 0
        self.summarised = 0
        self.added = 0  # every run queued since start (what the retention task trims after)
        self._warned_at = -WARN_SECONDS

    def add(self, item: R) -> bool:
        """Queue one run; False when the queue is full, and the run dropped and counted."""
        if not super().add(item):
            self.drop(1, FULL)
            return False
        self.added += 1
        return True

    def put_back(self, items: Sequence[R]) -> int:
        """`Backlog.put_back`; the runs dropped are counted."""
        excess = super().put_back(items)
        if excess:
            self.drop(excess, FULL)
        return excess

    def drop(self, count: int, why: str) -> None:
        """Count `count` runs lost, and say so (at most once per `WARN_SECONDS`)."""
        self.dropped += count
        self.warn("run log: %d run(s) dropped so far (%s)", self.dropped, why)

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_SECONDS:
            self._warned_at = now
            log.warning(message, *args)
