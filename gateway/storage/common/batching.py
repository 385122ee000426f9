"""Work done in batches: items queue, at most so many; a batch takes up to so many of them
at once; each item's caller gets its own result, or the error of its batch.

One helper, with a face for each side that takes the items:

- `Backlog`: the queue itself, oldest first, with a bound; taken up to `most` items (and
  bytes) at a time, and what could not be written put back in front for a retry.
- `Batcher`: on the event loop, one `send` at a time, each with the items that arrived
  while the one before was on its way (idempotency claims and answers, the ends of jobs).
- `Handoff`: from event loops to one thread, which takes the first item to come and every
  other already there, as one batch (the SQLite writer's group commit).
- `answer`, `answer_from_thread`: each caller answered with its own outcome.
- `Splitting`, `write_splitting`: a batch the database refuses, in halves, down to the one
  item it refuses (the run log, on either backend).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import queue
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Generic, TypeAlias, TypeVar

from gateway.core.errors import StorageUnavailableError

STOPPED = "the database is unavailable: the gateway is stopping"

T = TypeVar("T")
Item = TypeVar("Item")
Result = TypeVar("Result")
# What one item came to: (True, its result) or (False, the error its caller gets).
Outcome: TypeAlias = tuple[bool, Any]
# Who waits for an item's outcome: its caller's future, or None when nobody waits.
Waiter: TypeAlias = "asyncio.Future[Any] | None"


class Backlog(Generic[T]):
    """Items waiting to go in batches, oldest first, at most `limit` (None: no bound).

    One side adds, the other takes, on one event loop or across threads (the SQLite
    writer's thread takes the runs the event loop adds): a deque's append and popleft are
    safe across threads."""

    def __init__(self, limit: int | None = None) -> None:
        self._items: collections.deque[T] = collections.deque()
        self.limit = limit

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        """The waiting items, oldest first (on the side that adds them only)."""
        return iter(self._items)

    def add(self, item: T) -> bool:
        """Queue `item`; False, and nothing queued, when the backlog is full."""
        if self.limit is not None and len(self._items) >= self.limit:
            return False
        self._items.append(item)
        return True

    def take(self, most: int | None, weigh: Callable[[T], int] | None = None,
             most_weight: int = 0) -> list[T]:
        """Up to `most` of the oldest items (all of them for None), out of the backlog. With
        `weigh`, fewer when together they would weigh more than `most_weight` (one at
        least)."""
        count = len(self._items) if most is None else min(most, len(self._items))
        if weigh is not None:
            count = self._within(count, weigh, most_weight)
        return [self._items.popleft() for _ in range(count)]

    def _within(self, count: int, weigh: Callable[[T], int], most_weight: int) -> int:
        weight = 0
        for taken, item in enumerate(itertools.islice(self._items, count)):
            weight += weigh(item)
            if weight > most_weight:
                return max(1, taken)
        return count

    def put_back(self, items: Sequence[T]) -> int:
        """Return items that could not be written to the front, in their order, for a retry;
        the newest beyond the limit are dropped. How many were dropped."""
        self._items.extendleft(reversed(items))
        excess = 0 if self.limit is None else len(self._items) - self.limit
        for _ in range(excess):
            self._items.pop()
        return max(0, excess)


def answer(waiters: Sequence[Waiter], outcomes: Sequence[Outcome]) -> list[int]:
    """Each waiter its own outcome: its result, or its error raised where it waits. An item
    nobody waits for (None) is passed over, and so is one whose caller stopped waiting (its
    future is done: cancelled); the positions of those are returned, in order."""
    gone: list[int] = []
    for at, (future, (ok, value)) in enumerate(zip(waiters, outcomes, strict=True)):
        if future is None:
            continue
        if future.done():
            gone.append(at)
        elif ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    return gone


def answer_from_thread(waiters: Sequence[Waiter], outcomes: Sequence[Outcome]) -> None:
    """`answer`, from a thread other than the waiters': on each waiter's own event loop, one
    wake-up per loop for the whole batch. A loop that has closed has nobody waiting."""
    by_loop: dict[asyncio.AbstractEventLoop, tuple[list[Waiter], list[Outcome]]] = {}
    for future, outcome in zip(waiters, outcomes, strict=True):
        if future is not None:
            theirs = by_loop.setdefault(future.get_loop(), ([], []))
            theirs[0].append(future)
            theirs[1].append(outcome)
    for loop, (futures, replies) in by_loop.items():
        try:
            loop.call_soon_threadsafe(answer, futures, replies)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


class Batcher(Generic[Item, Result]):
    """Items sent together, on the event loop: one `send` at a time, each with the items
    that arrived while the one before was on its way (at most `most`; with `weigh`, at most
    `most_bytes` of them too, one item at least). `send` gives a result per item, in order,
    and each caller gets its own; a `send` that raises gives its error to every caller of
    its batch.

    `abandoned` hears of an item whose caller stopped waiting before its result came;
    `failed`, of the items nobody waits for (`later`) whose batch failed. A batch of such
    items only waits `linger` seconds for more before it goes (unless it is full), so that
    they go many to a statement. With `yield_first`, a round of sends lets the event loop
    turn once before its first batch, so that the items added in the same turn as the one
    that began it go with it. Cancelled (the loop is closing), the items still waiting are
    refused with `StorageUnavailableError`."""

    def __init__(self, send: Callable[[list[Item]], Awaitable[list[Result]]], *, most: int,
                 abandoned: Callable[[Item, Result], None] | None = None,
                 failed: Callable[[int, Exception], None] | None = None,
                 linger: float = 0.0, weigh: Callable[[Item], int] | None = None,
                 most_bytes: int = 0, yield_first: bool = False) -> None:
        self._send, self._abandoned, self._failed = send, abandoned, failed
        self._most, self._linger, self._yield_first = most, linger, yield_first
        self._weigh: Callable[[tuple[Item, Waiter]], int] | None = (
            None if weigh is None else lambda entry: weigh(entry[0]))
        self._most_bytes = most_bytes
        self._waiting: Backlog[tuple[Item, asyncio.Future[Result] | None]] = Backlog()
        self._task: asyncio.Task[None] | None = None

    def __call__(self, item: Item) -> asyncio.Future[Result]:
        """The item's result, once its batch is sent (to be awaited)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._add(item, future)
        return future

    def later(self, item: Item) -> None:
        """Send `item` with a coming batch, waited for by nobody."""
        self._add(item, None)

    def __len__(self) -> int:
        """The items waiting for a batch."""
        return len(self._waiting)

    async def drained(self) -> None:
        """Until every item handed over so far is sent (or failed)."""
        while self._task is not None:
            await asyncio.wait([self._task])

    def _add(self, item: Item, future: asyncio.Future[Result] | None) -> None:
        self._waiting.add((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        taken: list[tuple[Item, asyncio.Future[Result] | None]] = []
        try:
            if self._yield_first:
                await asyncio.sleep(0)
            while self._waiting:
                if self._linger and len(self._waiting) < self._most and \
                        all(future is None for _, future in self._waiting):
                    await asyncio.sleep(self._linger)
                taken = self._waiting.take(self._most, self._weigh, self._most_bytes)
                await self._send_batch(taken)
                taken = []
        except BaseException:  # cancelled (the loop is closing): nobody is left waiting
            self._fail(taken + list(self._waiting), StorageUnavailableError(STOPPED))
            raise
        finally:
            self._task = None

    async def _send_batch(self, taken: list[tuple[Item, asyncio.Future[Result] | None]]) -> None:
        try:
            results = await self._send([item for item, _ in taken])
        except Exception as exc:  # noqa: BLE001 - each caller gets the error
            self._fail(taken, exc)
            return
        gone = answer([future for _, future in taken], [(True, result) for result in results])
        if self._abandoned is not None:
            for at in gone:
                self._abandoned(taken[at][0], results[at])

    def _fail(self, taken: Sequence[tuple[Item, asyncio.Future[Result] | None]],
              exc: Exception) -> None:
        answer([future for _, future in taken], [(False, exc)] * len(taken))
        unwaited = sum(future is None for _, future in taken)
        if unwaited and self._failed is not None:
            self._failed(unwaited, exc)


class Handoff(Generic[T]):
    """Items handed to one thread from any other (event loops among them), never blocking
    the one that hands them over: the thread waits for the first to come and takes every
    other already there with it, as one batch. Items are never None."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[T] = queue.SimpleQueue()

    def put(self, item: T) -> None:
        self._queue.put(item)

    def next(self, wait: float) -> T | None:
        """The next item, waiting at most `wait` seconds for one; None if none came."""
        try:
            return self._queue.get(timeout=wait)
        except queue.Empty:
            return None

    def take(self, wait: float = 0.0) -> list[T]:
        """The first item to come within `wait` seconds (0: only what is there already),
        with every other there by then; none if none came."""
        first = self.next(wait) if wait > 0 else None
        taken = [] if first is None else [first]
        get = self._queue.get_nowait
        while True:
            try:
                taken.append(get())
            except queue.Empty:
                return taken


class Splitting(Generic[T]):
    """The parts of a batch to write, in turn: the batch whole, and a part the database
    refused in halves (`split`), down to the one item it refuses, so that one bad item never
    holds up the others. With `fits`, a part no statement would hold (`fits(part)` is false)
    goes in halves from the start."""

    def __init__(self, items: Sequence[T],
                 fits: Callable[[Sequence[T]], bool] | None = None) -> None:
        self._todo: list[Sequence[T]] = [items]
        self._fits = fits

    def __iter__(self) -> Iterator[Sequence[T]]:
        while self._todo:
            part = self._todo.pop()
            if self._fits is None or len(part) == 1 or self._fits(part):
                yield part
            else:
                self.split(part)

    def split(self, part: Sequence[T]) -> bool:
        """Write `part`, refused, in halves, the first half next; False when it is one item:
        the one refused."""
        if len(part) == 1:
            return False
        middle = len(part) // 2
        self._todo += (part[middle:], part[:middle])
        return True


def write_splitting(rows: Sequence[T], write: Callable[[Sequence[T]], None],
                    refused: Callable[[Exception], bool]) -> list[tuple[T, Exception]]:
    """Write `rows` through `Splitting`. Returns the items refused, each with its error; an
    error that is not a refusal (`refused(exc)` is false) is raised."""
    lost: list[tuple[T, Exception]] = []
    parts = Splitting(rows)
    for part in parts:
        try:
            write(part)
        except Exception as exc:
            if not refused(exc):
                raise
            if not parts.split(part):
                lost.append((part[0], exc))
    return lost


def batches(rows: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`rows` in slices of `size`, in order."""
    for start in range(0, len(rows), size):
        yield rows[start:start + size]
