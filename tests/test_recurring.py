"""When recurring events fire, with an injected clock: cron in a time zone across daylight
saving time, `every`, misfire policies, no overlap, and exactly one job per tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.model import RecurringEvent
from gateway.scheduler.recurring import last_fire, next_fire, plan, tick
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


def _last(event: RecurringEvent, due: datetime, status: str) -> Job:
    return Job("j", event.name, "recurring", due, status=status)


def test_misfire_skip_and_run_once_after_a_day_down() -> None:
    down_since = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    now = datetime(2026, 1, 3, 12, 0, tzinfo=UTC)
    skip = RecurringEvent("e", cron="0 3 * * *", misfire="skip")
    once = RecurringEvent("e", cron="0 3 * * *", misfire="run_once")
    last = _last(skip, down_since, "done")
    assert plan(skip, last, now) == datetime(2026, 1, 4, 3, 0, tzinfo=UTC)
    assert plan(once, last, now) == datetime(2026, 1, 3, 3, 0, tzinfo=UTC)  # the last missed
    up_to_date = _last(once, datetime(2026, 1, 3, 3, 0, tzinfo=UTC), "done")
    assert plan(once, up_to_date, now) == datetime(2026, 1, 4, 3, 0, tzinfo=UTC)


def test_no_overlap_and_a_first_tick_in_the_future() -> None:
    event = RecurringEvent("e", cron="0 3 * * *")
    now = datetime(2026, 1, 3, 12, 0, tzinfo=UTC)
    assert plan(event, _last(event, now, "running"), now) is None
    assert plan(event, _last(event, now, "pending"), now) is None
    assert plan(event, None, now) == datetime(2026, 1, 4, 3, 0, tzinfo=UTC)


def test_a_tick_is_keyed_by_its_event_and_due_time() -> None:
    event = RecurringEvent("e", cron="0 3 * * *", params={"days": 30})
    due = datetime(2026, 1, 4, 3, 0, tzinfo=UTC)
    one, other = tick(event, due, due), tick(event, due, due + timedelta(seconds=1))
    assert one.unique_key == other.unique_key == "recurring:e:2026-01-04T03:00:00.000000Z"
    assert one.id != other.id and one.data["params"] == {"days": 30}
