"""When recurring events fire, with an injected clock: cron in a time zone across daylight
saving time, `every`, misfire policies, no overlap, exactly one job per tick, and ticks
planned before the clock went back; per-record series likewise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.runtime.model import RecurringEvent
from gateway.scheduler.recurring import (
    Plan,
    earlier,
    last_fire,
    missed,
    next_fire,
    plan,
    series_after_missed,
    series_rewound,
    tick,
)
from gateway.storage import Job

PARIS = ZoneInfo("Europe/Paris")


def paris(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=PARIS, fold=fold).astimezone(UTC)  # type: ignore[misc]


def fires(event: RecurringEvent, start: datetime, count: int) -> list[datetime]:
    found, at = [], start
    for _ in range(count):
        at = next_fire(event, at)
        found.append(at)
    return found


NIGHTLY = RecurringEvent("nightly", cron="30 2 * * *", timezone="Europe/Paris")


def test_a_fixed_local_time_follows_the_zone_through_summer_time() -> None:
    assert fires(NIGHTLY, paris(2026, 3, 27, 12), 3) == [
        paris(2026, 3, 28, 2, 30),
        paris(2026, 3, 29, 3, 30),  # 02:30 does not exist that night: an hour later
        paris(2026, 3, 30, 2, 30),
    ]


def test_a_fixed_local_time_fires_once_on_the_night_clocks_go_back() -> None:
    assert fires(NIGHTLY, paris(2026, 10, 24, 12), 3) == [
        paris(2026, 10, 25, 2, 30), paris(2026, 10, 26, 2, 30), paris(2026, 10, 27, 2, 30)]
    # asked from within the repeated hour, the next is tomorrow's, never one already past
    assert next_fire(NIGHTLY, paris(2026, 10, 25, 2, 10, fold=1)) == paris(2026, 10, 26, 2, 30)


def test_an_expression_without_a_fixed_hour_fires_by_elapsed_time() -> None:
    half_hourly = RecurringEvent("h", cron="*/30 * * * *", timezone="Europe/Paris")
    ticks = fires(half_hourly, paris(2026, 10, 25, 1, 50), 5)
    assert [b - a for a, b in zip(ticks, ticks[1:], strict=False)] == [timedelta(minutes=30)] * 4


def test_every_counts_from_the_epoch_so_instances_agree() -> None:
    often = RecurringEvent("often", every=timedelta(minutes=15))
    at = datetime(2026, 1, 1, 12, 7, 30, tzinfo=UTC)
    assert next_fire(often, at) == datetime(2026, 1, 1, 12, 15, tzinfo=UTC)
    assert last_fire(often, at) == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _last(event: RecurringEvent, due: datetime, status: str, attempt: int = 0) -> Job:
    return Job("j", event.name, "recurring", due, status=status, attempt=attempt)


def _due(found: Plan | None) -> datetime | None:
    return None if found is None else found.due


def test_misfire_skip_and_run_once_after_a_day_down() -> None:
    down_since = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    now = datetime(2026, 1, 3, 12, 0, tzinfo=UTC)
    skip = RecurringEvent("e", cron="0 3 * * *", misfire="skip")
    once = RecurringEvent("e", cron="0 3 * * *", misfire="run_once")
    last = _last(skip, down_since, "done")
    assert plan(skip, last, now) == Plan(datetime(2026, 1, 4, 3, 0, tzinfo=UTC))
    assert plan(once, last, now) == Plan(datetime(2026, 1, 3, 3, 0, tzinfo=UTC))  # last missed
    up_to_date = _last(once, datetime(2026, 1, 3, 3, 0, tzinfo=UTC), "done")
    assert _due(plan(once, up_to_date, now)) == datetime(2026, 1, 4, 3, 0, tzinfo=UTC)


def test_a_pending_tick_missed_is_judged_at_its_first_claim() -> None:
    event = RecurringEvent("e", every=timedelta(seconds=1))
    due = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    late = due + timedelta(seconds=10, milliseconds=500)
    assert plan(event, _last(event, due, "pending"), late) is None  # left to the claim
    assert missed(event, _last(event, due, "running", attempt=1), late)
    assert not missed(event, _last(event, due, "running", attempt=1), due + timedelta(seconds=0.9))
    assert not missed(event, _last(event, due, "running", attempt=2), late)  # a retry runs


def test_no_overlap_and_a_first_tick_in_the_future() -> None:
    event = RecurringEvent("e", cron="0 3 * * *")
    now = datetime(2026, 1, 3, 12, 0, tzinfo=UTC)
    assert plan(event, _last(event, now, "running"), now) is None
    assert plan(event, _last(event, now, "pending"), now) is None
    assert plan(event, _last(event, now + timedelta(hours=5), "pending", attempt=1), now) is None
    assert plan(event, None, now) == Plan(datetime(2026, 1, 4, 3, 0, tzinfo=UTC))


def test_a_tick_planned_before_the_clock_went_back_gets_ticks_before_it() -> None:
    event = RecurringEvent("e", every=timedelta(seconds=1))
    planned = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)  # after the tick of 12:00:00 ran
    back = datetime(2026, 1, 1, 11, 0, 0, 200_000, tzinfo=UTC)  # the clock went back 1 h
    pending = _last(event, planned, "pending")
    assert plan(event, pending, back, went_back=True) == Plan(
        datetime(2026, 1, 1, 11, 0, 1, tzinfo=UTC), after=pending)
    ran = _last(event, planned - timedelta(seconds=1), "done")  # nothing planned after it
    assert plan(event, ran, back, went_back=True) == Plan(
        datetime(2026, 1, 1, 11, 0, 1, tzinfo=UTC), after=ran)
    # within SKEW of the next tick, even a clock that went back plans nothing before it
    behind = planned - timedelta(seconds=1, milliseconds=400)
    assert plan(event, pending, behind, went_back=True) is None
    assert plan(event, ran, behind, went_back=True) == Plan(planned)
    one = tick(event, datetime(2026, 1, 1, 11, 0, 1, tzinfo=UTC), back, after=pending)
    assert one.unique_key == "recurring:e:2026-01-01T11:00:01.000000Z:j"


def test_a_tick_ahead_of_a_clock_that_did_not_go_back_waits_for_its_time() -> None:
    # another instance, its clock an hour (or 1.5 s) ahead, planned it: no tick before it
    event = RecurringEvent("e", every=timedelta(seconds=1))
    planned = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)
    for behind in (timedelta(hours=1), timedelta(seconds=1.5)):
        assert plan(event, _last(event, planned, "pending"), planned - behind) is None
        ran = _last(event, planned - timedelta(seconds=1), "done")
        assert plan(event, ran, planned - behind) == Plan(planned)


def _series(due: datetime, frequency: str, first: bool = False) -> Job:
    return Job("s-2", "e", "recurring", due, subject="r1", attempt=1,
               data={"frequency": frequency, "series": "s-2" if first else "s-1"})


def test_a_series_missed_tick_and_its_misfire() -> None:
    start = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)
    now = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
    event = RecurringEvent("e", type="lead")
    assert missed(event, _series(start, "monthly"), now)
    assert not missed(event, _series(start, "monthly"), start + timedelta(days=27))
    # 31 Jan, 28 Feb, 28 Mar were missed (a month end stays within its month)
    assert series_after_missed("skip", start, "monthly", now) == datetime(2026, 4, 28, 9, 0,
                                                                          tzinfo=UTC)
    assert series_after_missed("run_once", start, "monthly", now) == datetime(2026, 3, 28, 9, 0,
                                                                              tzinfo=UTC)


def test_a_series_tick_planned_before_the_clock_went_back_is_planned_again() -> None:
    ran = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
    planned = _series(ran + timedelta(days=1), "daily")
    assert series_rewound(planned, ran - timedelta(days=2, hours=-1)) == ran - timedelta(days=1)
    assert series_rewound(planned, ran - timedelta(seconds=0.5)) is None  # within SKEW
    assert series_rewound(planned, ran + timedelta(hours=1)) is None
    # the first tick of a series is due when set_recurring_event said, however far
    assert series_rewound(_series(ran + timedelta(days=400), "daily", first=True), ran) is None
    assert earlier(datetime(2026, 3, 31, tzinfo=UTC), "monthly") == datetime(2026, 2, 28,
                                                                               tzinfo=UTC)
    assert earlier(datetime(2026, 1, 15, tzinfo=UTC), "quarterly") == datetime(2025, 10, 15,
                                                                                tzinfo=UTC)


def test_a_tick_is_keyed_by_its_event_and_due_time() -> None:
    event = RecurringEvent("e", cron="0 3 * * *", params={"days": 30})
    due = datetime(2026, 1, 4, 3, 0, tzinfo=UTC)
    one, other = tick(event, due, due), tick(event, due, due + timedelta(seconds=1))
    assert one.unique_key == other.unique_key == "recurring:e:2026-01-04T03:00:00.000000Z"
    assert one.id != other.id and one.data["params"] == {"days": 30}
