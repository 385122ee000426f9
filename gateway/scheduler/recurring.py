"""When recurring events fire: the next tick of an event, what to do about ticks missed
while no instance ran them (`misfire`), and about ticks planned before the clock went
back. Pure functions of the event, its ticks and the time, so that misfires, clock steps
and daylight saving time are tested with an injected clock.

`cron` is read by croniter in the event's time zone (zoneinfo), as cron itself does across
daylight saving time: an expression with a fixed hour (`0 3 * * *`) fires once per local
wall time, so 03:00 in Europe/Paris in winter and in summer; on the night clocks go back,
02:30 fires once (its first occurrence); on the night they go forward, 02:30 does not
exist and fires at 03:30 (the same instant one hour of gap later). An expression whose
hour is `*` (every 15 minutes, say) fires by elapsed time, so every quarter hour of the
repeated hour too. `every` counts from the Unix epoch, so every instance agrees on the
ticks without talking to the others.

A tick is missed when the tick after it is due before the tick started: `skip` runs none
of the missed ticks and goes on with the next to come, `run_once` runs the latest of them
once. When a scheduler saw its own clock go back (`Planner`), a tick due more than one
period (and `SKEW`) from now was planned before it did: the ticks to come from now are
planned before it (a global event's: keyed by it, since their times may have had ticks
already) or in its stead (a per-record event's), so that the event does not stall for the
size of the step. A tick that merely looks early is never taken for one: another
instance, whose clock is ahead of this one's, planned it.
"""

from __future__ import annotations

import calendar
import math
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import croniter

from gateway.actions.scheduling import add_frequency
from gateway.core.encoding import iso
from gateway.core.ids import new_id
from gateway.runtime.model import RecurringEvent
from gateway.storage.contract import Job

_TICK = timedelta(microseconds=1)
# How far a scheduler's clock may drift from `time.monotonic()` between two passes before it
# counts as gone back, and how much further than one period ahead a tick must then lie to
# be taken for one planned before the step.
SKEW = timedelta(seconds=1)


def next_fire(event: RecurringEvent, after: datetime) -> datetime:
    """The first tick strictly after `after` (UTC)."""
    if event.every is not None:
        period = event.every.total_seconds()
        count = math.floor(after.timestamp() / period) + 1
        return datetime.fromtimestamp(count * period, UTC)
    assert event.cron is not None, f"recurring event {event.name} without a schedule"
    zone = zoneinfo.ZoneInfo(event.timezone)
    if _by_elapsed_time(event.cron):
        fire: datetime = croniter(event.cron, after.astimezone(zone)).get_next(datetime)
        return fire.astimezone(UTC)
    times = croniter(event.cron, _wall(after, zone))
    while True:  # after a time in the hour that repeats, its first occurrence is past
        found = _instant(times.get_next(datetime), zone)
        if found > after:
            return found


def last_fire(event: RecurringEvent, at: datetime) -> datetime:
    """The latest tick at or before `at` (UTC)."""
    if event.every is not None:
        period = event.every.total_seconds()
        return datetime.fromtimestamp(math.floor(at.timestamp() / period) * period, UTC)
    assert event.cron is not None
    zone = zoneinfo.ZoneInfo(event.timezone)
    if _by_elapsed_time(event.cron):
        fire: datetime = croniter(event.cron, (at + _TICK).astimezone(zone)).get_prev(datetime)
        return fire.astimezone(UTC)
    wall: datetime = croniter(event.cron, _wall(at + _TICK, zone)).get_prev(datetime)
    found = _instant(wall, zone)
    return found if found <= at else last_fire(event, found - _TICK)


def _by_elapsed_time(cron: str) -> bool:
    """An expression whose hour field is `*` fires by elapsed time; others by wall time."""
    return cron.split()[1] == "*"


def _wall(instant: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The local wall-clock time of an instant, without its zone."""
    return instant.astimezone(zone).replace(tzinfo=None)


def _instant(wall: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The instant of a local wall-clock time: the first of two when clocks went back; in
    a gap when they went forward, the time the gap's length later."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Plan:
    """The tick to write next: due at `due`; keyed by `after` too when there is one (the
    event's newest tick, when the clock went back behind it: a tick for a time that was
    due once already, which its plain key may name)."""

    due: datetime
    after: Job | None = None


def plan(event: RecurringEvent, last: Job | None, now: datetime,
         went_back: bool = False) -> Plan | None:
    """The tick to write next, given the event's newest tick (by due time): None while
    that one is to run or running (ticks never overlap); the next one after it when that is
    still to come; when ticks were missed, `misfire` says which (see `after_missed`); when
    this scheduler's clock `went_back` and the newest tick lies beyond one period from now,
    the next from now. An event never seen before starts with its next tick. A pending
    tick that was missed is left for the claim to judge (`missed`), a retry to its backoff;
    a tick that lies ahead while the clock did not go back, to its time (another instance,
    whose clock is ahead, planned it)."""
    if last is None:
        return Plan(next_fire(event, now))
    if last.status == "running" or (last.status == "pending" and last.attempt > 0):
        return None
    following = last.due_at if last.status == "pending" else next_fire(event, last.due_at)
    if went_back and following > next_fire(event, now + SKEW):  # planned before the step
        return Plan(next_fire(event, now), after=last)
    if last.status == "pending":
        return None
    if following > now:
        return Plan(following)
    return Plan(after_missed(event, now))


def after_missed(event: RecurringEvent, now: datetime) -> datetime:
    """The tick to plan once ticks were missed: the next to come (`skip`), or the latest
    missed, to run at once (`run_once`)."""
    return last_fire(event, now) if event.misfire == "run_once" else next_fire(event, now)


def missed(event: RecurringEvent, job: Job, now: datetime) -> bool:
    """Whether a tick claimed at `now` was missed: its first claim, when the tick after it
    is due already (a retry, or a claim after a lost lease, runs as it is)."""
    if job.attempt != 1:
        return False
    if job.subject is None:
        return next_fire(event, job.due_at) <= now
    frequency = str(job.data.get("frequency", "none"))
    return frequency in SERIES and add_frequency(job.due_at, frequency) <= now


def tick(event: RecurringEvent, due: datetime, now: datetime, after: Job | None = None) -> Job:
    """One tick as a job, keyed by the event and its due time (and the tick it was planned
    after, see `Plan`): written by any number of instances, it exists once."""
    key = f"recurring:{event.name}:{iso(due)}" + (f":{after.id}" if after is not None else "")
    return Job(id=new_id(now), workflow=event.name, source="recurring", due_at=due,
               unique_key=key, created_at=now,
               data={"params": dict(event.params), "identity": {"kind": "admin",
                                                                "user_id": None}, "depth": 0})


# Per-record events: a series of ticks started by `set_recurring_event`, each due one
# `frequency` after the one before.
SERIES = frozenset({"daily", "weekly", "monthly", "quarterly", "yearly"})
_MONTHS = {"monthly": 1, "quarterly": 3, "yearly": 12}


def earlier(when: datetime, frequency: str) -> datetime:
    """`when` one period earlier (a month end stays within its month, as `add_frequency`)."""
    if frequency == "daily":
        return when - timedelta(days=1)
    if frequency == "weekly":
        return when - timedelta(weeks=1)
    months = when.year * 12 + when.month - 1 - _MONTHS[frequency]
    year, month = divmod(months, 12)
    return when.replace(year=year, month=month + 1,
                        day=min(when.day, calendar.monthrange(year, month + 1)[1]))


def series_after_missed(misfire: str, due: datetime, frequency: str,
                        now: datetime) -> datetime:
    """The tick of a series to plan in the stead of its missed tick due at `due`: the
    first to come (`skip`), or the latest missed, to run at once (`run_once`)."""
    latest = due
    while (following := add_frequency(latest, frequency)) <= now:
        latest = following
    return latest if misfire == "run_once" else following


def series_rewound(job: Job, now: datetime) -> datetime | None:
    """When a series' pending tick planned before the clock went back is due now: the
    first of its times after now, going back by periods; None when it is not one. The
    first tick of a series is never one (it is due when `set_recurring_event` said)."""
    frequency = str(job.data.get("frequency", "none"))
    if frequency not in SERIES or job.data.get("series", job.id) == job.id:
        return None
    if job.due_at <= add_frequency(now + SKEW, frequency):
        return None
    due = job.due_at
    while (before := earlier(due, frequency)) > now:
        due = before
    return due
