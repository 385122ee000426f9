"""When recurring events fire: the next tick of an event, and what to do about the ticks
missed while no instance ran (`misfire`). Pure functions of the event, its last tick and
the time, so that misfires and daylight saving time are tested with an injected clock.

`cron` is read by croniter in the event's time zone (zoneinfo), as cron itself does across
daylight saving time: an expression with a fixed hour (`0 3 * * *`) fires once per local
wall time, so 03:00 in Europe/Paris in winter and in summer; on the night clocks go back,
02:30 fires once (its first occurrence); on the night they go forward, 02:30 does not
exist and fires at 03:30 (the same instant one hour of gap later). An expression whose
hour is `*` (every 15 minutes, say) fires by elapsed time, so every quarter hour of the
repeated hour too. `every` counts from the Unix epoch, so every instance agrees on the
ticks without talking to the others.
"""

from __future__ import annotations

import math
import zoneinfo
from datetime import UTC, datetime, timedelta

from croniter import croniter

from gateway.encoding import iso
from gateway.ids import new_id
from gateway.model import RecurringEvent
from gateway.storage.interface import Job

_TICK = timedelta(microseconds=1)
# An event that ticked, then stopped: its last tick is done, and no new one is due yet.
ACTIVE = frozenset({"pending", "running"})


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


def plan(event: RecurringEvent, last: Job | None, now: datetime) -> datetime | None:
    """The tick to write next, given the event's newest tick: None while that one is
    pending or running (ticks never overlap); the next one after it when that is still to
    come; when ticks were missed, the most recent of them (`run_once`, run at once) or the
    next one to come (`skip`). An event never seen before starts with its next tick."""
    if last is not None and last.status in ACTIVE:
        return None
    if last is None:
        return next_fire(event, now)
    following = next_fire(event, last.due_at)
    if following > now:
        return following
    if event.misfire == "run_once":
        return last_fire(event, now)
    return next_fire(event, now)


def tick(event: RecurringEvent, due: datetime, now: datetime) -> Job:
    """One tick as a job, keyed by the event and its due time: written by any number of
    instances, it exists once."""
    return Job(id=new_id(now), workflow=event.name, source="recurring", due_at=due,
               unique_key=f"recurring:{event.name}:{iso(due)}", created_at=now,
               data={"params": dict(event.params), "identity": {"kind": "admin",
                                                                "user_id": None}, "depth": 0})
