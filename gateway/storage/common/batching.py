"""How recorded runs wait to be written in batches (`RunQueue`), and rows cut into batches."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from gateway.storage.common.catalog import log

# Runs written per statement: large enough that the log costs little per run, small enough
# for SQLite's limit on a statement's variables and to never hold up a request for long.
RUN_BATCH = 500


DEFAULT_MAX_QUEUE = 10_000


WARN_SECONDS = 60.0


R = TypeVar("R")


class RunQueue(Generic[R]):
    """Recorded runs waiting to be written, oldest first, taken in batches, at most `limit`.

    One side adds (the event loop), the other takes (the SQLite writer thread or the
    PostgreSQL flusher task); a deque's append and popleft are safe across threads. A run
    that finds the queue full (the database is down or too slow) is dropped and counted,
    and so is one the database refuses even as its summary: `dropped` is the total since
    start, and the warning about it is logged at most once per `WARN_SECONDS`.
    """

    def __init__(self, limit: int = DEFAULT_MAX_QUEUE) -> None:
        self._rows: collections.deque[R] = collections.deque()
        self.limit = limit
        self.dropped = 0
        self.summarised = 0
        self.added = 0  # every run queued since start (what the retention task trims after)
        self._warned_at = -WARN_SECONDS

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: R) -> bool:
        """Queue one run; True when this run completes a batch (time to write)."""
        if len(self._rows) >= self.limit:
            self.drop(1, "the queue of runs to write is full")
            return False
        self._rows.append(row)
        self.added += 1
        return len(self._rows) == RUN_BATCH

    def take(self, limit: int | None = RUN_BATCH) -> list[R]:
        """Up to `limit` of the oldest runs (all of them for None), out of the queue."""
        count = len(self._rows) if limit is None else min(limit, len(self._rows))
        return [self._rows.popleft() for _ in range(count)]

    def put_back(self, rows: Sequence[R]) -> None:
        """Return runs that could not be written to the front, for a retry; the newest runs
        beyond the limit are dropped."""
        self._rows.extendleft(reversed(rows))
        excess = len(self._rows) - self.limit
        if excess > 0:
            for _ in range(excess):
                self._rows.pop()
            self.drop(excess, "the queue of runs to write is full")

    def drop(self, count: int, why: str) -> None:
        """Count `count` runs lost, and say so (at most once per `WARN_SECONDS`)."""
        self.dropped += count
        self.warn("run log: %d run(s) dropped so far (%s)", self.dropped, why)

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_SECONDS:
            self._warned_at = now
            log.warning(message, *args)


def write_splitting(rows: Sequence[R], write: Callable[[Sequence[R]], None],
                    refused: Callable[[Exception], bool]) -> list[tuple[R, Exception]]:
    """Write `rows`; when the database refuses a batch, each half is tried on its own, down
    to single rows, so one bad run never holds up the others. Returns the runs refused, each
    with its error; an error that is not a refusal (`refused(exc)` is false) is raised."""
    try:
        write(rows)
        return []
    except Exception as exc:
        if not refused(exc):
            raise
        if len(rows) == 1:
            return [(rows[0], exc)]
    middle = len(rows) // 2
    return (write_splitting(rows[:middle], write, refused)
            + write_splitting(rows[middle:], write, refused))


def batches(rows: Sequence[R], size: int = RUN_BATCH) -> Iterator[Sequence[R]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]
