"""A run's storage work as one transaction.

`Storage.begin()` makes the storage work of the task that calls it one transaction, from
its first write until `commit()` or `rollback()`: the records a run writes, the users and
tokens it makes, the jobs it schedules and the trigger runs its changes call for commit
together or not at all. Reads made after the first write see the transaction's own writes;
before it, they read what is committed, as any other reader does. Work of other tasks (a
background flusher, another request) is never part of it, even when it was started from
inside the run: only the task that began the unit is in it.

Each backend subclasses `Unit` with what holds its transaction open (the SQLite writer's
turn, a PostgreSQL connection); this module holds what both share: which unit the current
task is in, and what waits for its commit.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

_CURRENT: contextvars.ContextVar[Unit | None] = contextvars.ContextVar(
    "gateway_storage_unit", default=None)


class Unit:
    """One transaction of one task's storage work on one database (`owner`)."""

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.task = asyncio.current_task()
        self.written = False  # set by the backend when the database holds part of it
        self.closed = False
        self.ended = False
        self.after_commit: list[Callable[[], None]] = []
        # Writes whose result the gateway knows without the database (a new record with no
        # unique field), held until the unit's next statement or its end: a run whose only
        # write is such a one commits it as a single statement, with no transaction held.
        self.pending: list[Any] = []
        self._token: contextvars.Token[Unit | None] | None = _CURRENT.set(self)

    def close(self) -> None:
        """No more work joins the unit: the task's storage work is its own again."""
        self.closed = True
        token, self._token = self._token, None
        if token is not None:
            try:
                _CURRENT.reset(token)
            except ValueError:  # ended from another context: it is closed all the same
                pass

    def end(self) -> bool:
        """Closed, and True the first time only: a unit commits or rolls back once."""
        first = not self.ended
        self.ended = True
        self.close()
        return first

    def committed(self) -> None:
        """What waited for the commit (waking this process's workers, say) happens now."""
        callbacks, self.after_commit = self.after_commit, []
        for callback in callbacks:
            callback()

    async def commit(self) -> None:  # pragma: no cover - every backend overrides it
        raise NotImplementedError

    async def rollback(self) -> None:  # pragma: no cover - every backend overrides it
        raise NotImplementedError


class Joined:
    """`begin()` inside a unit: the work joins the one already open, which decides."""

    async def commit(self) -> None:
        return None

    async def rollback(self) -> None:
        return None


JOINED = Joined()


def current(owner: object) -> Unit | None:
    """The open unit of the current task on `owner`'s database, if any."""
    unit = _CURRENT.get()
    if unit is None or unit.owner is not owner or unit.closed:
        return None
    return unit if unit.task is asyncio.current_task() else None


def after_commit(owner: object, callback: Callable[[], None]) -> None:
    """`callback` called once the current task's unit commits (and never if it rolls
    back), or at once outside a unit."""
    unit = current(owner)
    if unit is None:
        callback()
    else:
        unit.after_commit.append(callback)


def each_of(tell: Callable[[str], None], items: list[str]) -> Callable[[], None]:
    """A callback that tells `tell` each of `items` (for `after_commit`)."""
    def told() -> None:
        for item in items:
            tell(item)

    return told
