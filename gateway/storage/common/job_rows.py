"""What both backends' job stores share: a row as a `Job`, the pending bound, and the wake
of this process's workers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.core.encoding import loads as codec_loads
from gateway.core.errors import TooManyJobsError
from gateway.storage.contract import Job, PendingBound
from gateway.storage.contract.job_store import CallKeys


def job_from_row(row: Sequence[Any], when: Callable[[Any], datetime | None]) -> Job:
    """A `gateway_jobs` row (the columns of the `get_job` query) as a `Job`; `when` reads
    the backend's timestamps (ISO text on SQLite, datetimes on PostgreSQL)."""
    data = row[14]
    due = when(row[4])
    assert due is not None, "a job without a due time"
    return Job(id=row[0], workflow=row[1], source=row[2], status=row[3], due_at=due,
               attempt=row[5], lease_until=when(row[6]), worker=row[7], unique_key=row[8],
               subject=row[9], created_at=when(row[10]), finished_at=when(row[11]),
               run_id=row[12], error=row[13], claims=row[15], flow_key=row[16],
               flow_limit=row[17], throttle_key=row[18], throttle_limit=row[19],
               throttle_ms=row[20], debounce_key=row[21], single_key=row[22],
               data=codec_loads(data) if isinstance(data, (str, bytes)) else data)


def epoch_ms(at: datetime) -> int:
    """A time as whole milliseconds since the epoch: how a job's start is kept for its
    throttle (`started_ms`), so that both backends compare it with plain arithmetic."""
    return int(at.timestamp() * 1000)


def started_ms(now: datetime, asked: float) -> int:
    """A claim's start as kept for its throttle (`started_ms`), and the moment its throttle
    counts back from: `now`, when the claim was asked for, plus how long it waited since
    (`asked`, a `time.monotonic()`) for its turn (PostgreSQL's lock on keyed claims,
    SQLite's writer). A start stamped before that wait would leave its throttle's window
    that much early, and let more than the limit start within a period."""
    return epoch_ms(now) + int((time.monotonic() - asked) * 1000)


def turns(full: Sequence[Any], due: Mapping[str, Sequence[str]],
          now_ms: int) -> list[tuple[datetime, str]]:
    """The due times of the throttled jobs that must wait for their turn: for each full
    throttle key (a `full_throttles` row: key, period, limit, the first start of its jobs
    and of its calls within the period), its due jobs in order (`due[key]`), made due in
    batches of its limit, one period apart, from when its next start opens. A job made due
    later leaves the keyed claims' window until then (it holds back no other key's jobs),
    and the workers wake for it."""
    found = []
    for key, period, limit, first_job, first_call in full:
        opens = (first_of(first_job, first_call) or now_ms) + int(period)
        for rank, id in enumerate(due.get(key, ())):
            at = opens + (rank // max(int(limit), 1)) * int(period)
            found.append((datetime.fromtimestamp(at / 1000, UTC), id))
    return found


CONCURRENCY_WAIT = 1.0  # seconds a call refused by a full concurrency key is told to wait


def call_wait(keys: CallKeys, running: int, started: int, first_ms: int | None,
              now_ms: int) -> float | None:
    """Whether a call under `keys` is admitted now (None) or how long to wait: its
    concurrency key holds `running` jobs and calls; its throttle key saw `started` starts
    in its period, the first at `first_ms` (epoch milliseconds), whose leaving it opens."""
    waits = []
    if keys.flow_limit is not None and running >= keys.flow_limit:
        waits.append(CONCURRENCY_WAIT)
    if keys.throttle_limit is not None and started >= keys.throttle_limit:
        opens = (first_ms if first_ms is not None else now_ms) + (keys.throttle_ms or 0)
        waits.append(max(opens - now_ms, 1) / 1000)
    return max(waits) if waits else None


def first_of(*starts: Any) -> int | None:
    """The earliest of some start times (epoch milliseconds), None among them ignored."""
    found = [int(start) for start in starts if start is not None]
    return min(found) if found else None


def check_pending(bound: PendingBound, counts: Mapping[str, int], added: Iterable[str]) -> None:
    """Raise `TooManyJobsError` when the pending jobs `counts` holds (by workflow, the jobs
    just added included) pass `bound`, in all or for a workflow of `added`."""
    if bound.per_workflow is not None:
        for workflow in sorted(set(added)):
            if counts.get(workflow, 0) > bound.per_workflow:
                raise TooManyJobsError(
                    f"Too many jobs of workflow '{workflow}' wait to run (more than "
                    f"{bound.per_workflow:,}: limits.max_pending_jobs_per_workflow); nothing "
                    "this run did was kept. Try again later")
    if bound.most is not None and sum(counts.values()) > bound.most:
        raise TooManyJobsError(
            f"Too many jobs wait to run (more than {bound.most:,}: limits.max_pending_jobs); "
            "nothing this run did was kept. Try again later")


class Wake:
    """Wakes the workers of this process when jobs were enqueued (on PostgreSQL, a
    notification does the same for every instance)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def _ready(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def set(self) -> None:
        self._ready().set()

    async def wait(self, timeout: float) -> None:
        event = self._ready()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()
