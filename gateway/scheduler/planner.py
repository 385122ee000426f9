"""Writing recurring events' ticks (`gateway.scheduler.recurring` says when): each global
event's next tick, at every pass of the scheduler and as soon as one of its ticks ends (so
that `every: 1s` fires once a second); a per-record event's next tick, and the tick that a
missed tick's `misfire` policy plans in its stead, made for the scheduler to write with the
tick's end, in its transaction (`JobEnd.then`, or the run's commit), so that no failure
between the two ends a series; and, once this
scheduler saw its own clock go back, ticks to come before those planned before it did (a
global event's, until its clock reads again the time it read before the step; a per-record
event's, at the pass that saw the step). Only its own clock, measured against
`time.monotonic()`, tells it so: a tick that looks early may come from another instance
whose clock is ahead (by more than `SKEW`), and taking it for one planned before a step
would run a tick twice.

Any number of schedulers plan the same ticks: a global tick's key is its event and due
time, a per-record tick's its series and the tick it follows, so that a tick is written
once, and a tick run again (a retry) is followed by the one tick that followed it already.
A per-record tick is written only while its series is its record's current one (see
`JobStore.set_series`): a series stopped or replaced is followed no further.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from gateway.actions.scheduling import add_frequency, recurring_job
from gateway.core.clock import Clock
from gateway.runtime.model import RecurringEvent
from gateway.scheduler.recurring import (
    SERIES,
    SKEW,
    plan,
    series_after_missed,
    series_rewound,
    tick,
)
from gateway.storage.contract import Job, Storage

PAGE = 500  # per-record ticks read at once when the clock went back
REPLACE_SECONDS = 10.0  # how long replacing one tick may hold SQLite's writer
SHORTEST = timedelta(days=1)  # the shortest period of a per-record event (`daily`)


def successor(job: Job, due: datetime, now: datetime) -> Job:
    """The tick of a per-record event's series that comes after `job` (or in its stead),
    due at `due`: keyed by its series and the tick it follows, not by its time, so that
    every worker that ends `job`, however often `job` runs, writes the same one (the series
    never forks), and a time the series had a tick for before the clock went back has one
    again."""
    data = {k: v for k, v in job.data.items() if k not in ("thing", "frequency")}
    assert job.subject is not None, "a per-record tick without its record"
    series = str(job.data.get("series") or job.id)
    made = recurring_job(job.workflow, job.subject, str(job.data["frequency"]), due, data,
                         series)
    return replace(made, unique_key=f"recurring:{job.workflow}:{job.subject}:{series}"
                                    f":after:{job.id}", created_at=now)


class Planner:
    """Plans the ticks of one store's recurring events, with the scheduler's clock."""

    def __init__(self, storage: Storage, clock: Clock) -> None:
        self.storage = storage
        self.clock = clock
        self._seen: tuple[float, datetime] | None = None  # (monotonic, clock) at the last pass
        self._ahead: datetime | None = None  # what the clock read before it went back

    async def plan(self, events: Iterable[RecurringEvent]) -> None:
        """The next tick of each global event; when the clock went back since the last
        pass, the per-record ticks planned before it did, planned again."""
        now = self.clock()
        went_back = self._went_back(now)
        per_record = False
        for event in events:
            per_record = per_record or event.per_record
            if not event.per_record:
                await self.plan_event(event, now)
        if went_back and per_record:
            await self.rewind(now)

    def _went_back(self, now: datetime) -> bool:
        """Whether this scheduler's clock went back (by more than `SKEW`) since its last
        pass, against `time.monotonic()`; what it read before is kept (see `_behind`).
        Never at the first pass: with nothing of its own to compare, a tick ahead of its
        clock is no sign of a step (see the module)."""
        mono = time.monotonic()
        seen, self._seen = self._seen, (mono, now)
        if seen is None:
            return False
        if (now - seen[1]).total_seconds() >= mono - seen[0] - SKEW.total_seconds():
            return False
        self._ahead = max(self._ahead or seen[1], seen[1])
        return True

    def _behind(self, now: datetime) -> bool:
        """Whether the clock still reads a time before the one it read before it last went
        back: ticks planned before the step may lie ahead by more than a period."""
        if self._ahead is not None and now >= self._ahead:
            self._ahead = None
        return self._ahead is not None

    async def plan_event(self, event: RecurringEvent, now: datetime | None = None) -> None:
        """The next tick of one global event, if it needs one."""
        now = now or self.clock()
        found = plan(event, await self.storage.jobs.last_tick(event.name), now,
                     self._behind(now))
        if found is not None:
            await self.storage.jobs.enqueue([tick(event, found.due, now, found.after)])

    def following(self, event: RecurringEvent, job: Job) -> Job | None:
        """The tick of a per-record series after `job`, to write with `job`'s end, however
        it ends (run, failed, or put back to be retried); None for any other job. Asked
        once `job`'s record was found: a record that is gone ends its series."""
        frequency = str(job.data.get("frequency", "none"))
        if event.type is None or job.subject is None or frequency not in SERIES:
            return None
        return successor(job, add_frequency(job.due_at, frequency), self.clock())

    async def instead(self, event: RecurringEvent, job: Job) -> Job | None:
        """The tick that `misfire` plans in the stead of a per-record series' missed tick,
        to write with its end; None for a global event's (planned once it ended), and when
        the record is gone (which ends the series)."""
        frequency = str(job.data.get("frequency", "none"))
        if event.type is None or job.subject is None or frequency not in SERIES:
            return None
        if await self.storage.records.get(event.type, job.subject) is None:
            return None
        now = self.clock()
        return successor(job, series_after_missed(event.misfire, job.due_at, frequency, now),
                         now)

    async def rewind(self, now: datetime) -> int:
        """Per-record ticks planned before the clock went back (more than one period
        ahead), each replaced by the first of its series' times after now; how many."""
        since: tuple[datetime, str] = (now + SKEW + SHORTEST, "")
        replaced = 0
        while page := await self.storage.jobs.series_ticks(since, PAGE):
            for job in page:
                due = series_rewound(job, now)
                if due is not None:
                    replaced += await self._replace(job, successor(job, due, now), now)
            if len(page) < PAGE:
                break
            since = (page[-1].due_at, page[-1].id)
        return replaced

    async def _replace(self, job: Job, instead: Job, now: datetime) -> int:
        """`job` cancelled and `instead` written, in one transaction: by the one scheduler
        whose cancel took it, when several replace it at once."""
        transaction = self.storage.begin(REPLACE_SECONDS)
        try:
            if not await self.storage.jobs.cancel([job.id], now):
                return 0
            await self.storage.jobs.enqueue([instead])
            await transaction.commit()
            return 1
        finally:
            await transaction.rollback()  # unless it committed
