"""Work a run hands on once it has committed (`RunContext.after_commit`): done in the
background, outside the run's transaction and time, so that it never holds the run's
answer, and never happens for a run that rolled back. A failure is logged; it cannot be the
run's any more."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger("gateway.run")
Work = Callable[[], Awaitable[None]]
_RUNNING: set[asyncio.Task[None]] = set()  # held until done (the loop keeps weak references)


def hand_on(work: Sequence[Work]) -> None:
    for item in work:
        task = asyncio.ensure_future(_done(item))
        _RUNNING.add(task)
        task.add_done_callback(_RUNNING.discard)


async def _done(work: Work) -> None:
    try:
        await work()
    except Exception:  # noqa: BLE001 - the run has answered; the failure is told here
        log.warning("work handed on after a run's commit failed", exc_info=True)


async def settled() -> None:
    """Wait for the work handed on so far (a process that stops, a test)."""
    while _RUNNING:
        await asyncio.gather(*list(_RUNNING), return_exceptions=True)
