"""What the overview shows: the day's figures, aggregated by the database and reused for a
few seconds, and the last hour's failures."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime, timedelta
from typing import Any

from gateway.console import chart
from gateway.console.runs_page import run_row
from gateway.storage import Storage
from gateway.storage.contract import RunStats

FAILURES = 20  # the last hour's failures the overview lists
DAY_BUCKET = timedelta(minutes=15)
FIGURES_SECONDS = 10.0  # how long the day's aggregates are reused


class Figures:
    """The day's aggregates (counts, percentiles), computed at most once every
    `FIGURES_SECONDS` per process: a day of a busy log costs tens of milliseconds to
    aggregate, and figures ten seconds old are as good to look at. Bounded: a few keys."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self._found: dict[Hashable, tuple[float, Any]] = {}

    async def get(self, key: Hashable, make: Callable[[], Awaitable[Any]]) -> Any:
        now = self.monotonic()
        hit = self._found.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await make()
        self._found = {k: v for k, v in self._found.items() if v[0] > now}
        self._found[key] = (now + FIGURES_SECONDS, value)
        return value


async def day_stats(storage: Storage, figures: Figures, now: datetime) -> list[RunStats]:
    stats: list[RunStats] = await figures.get(
        (id(storage), "stats"), lambda: storage.runs.run_stats(now - timedelta(days=1)))
    return stats


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


async def overview(storage: Storage, figures: Figures, now: datetime) -> dict[str, Any]:
    """Runs per minute by status over the last hour and day, p50/p99 per workflow over the
    day, and the last hour's failures."""
    end = _minute(now) + timedelta(minutes=1)
    hour = await _buckets(storage, end - timedelta(hours=1), end, timedelta(minutes=1))
    day: list[chart.Bucket] = await figures.get((id(storage), "day", end), lambda: _buckets(
        storage, end - timedelta(days=1), end, DAY_BUCKET))
    stats = await day_stats(storage, figures, now)
    failures = await storage.runs.page_runs(status="failed", since=now - timedelta(hours=1),
                                            limit=FAILURES)
    return {"hour_chart": chart.stacked(hour, "Runs per minute by status, last hour", 10),
            "day_chart": chart.stacked(day, "Runs per minute by status (15-minute averages), "
                                       "last 24 hours", 16),
            "hour": hour, "day_totals": _totals(day, DAY_BUCKET),
            "stats": stats, "duration_chart": chart.durations(
                [(s.workflow, s.p50_ms, s.p99_ms) for s in stats],
                "p50 and p99 duration per workflow, last 24 hours"),
            "failures": [run_row(r) for r in failures]}


async def _buckets(storage: Storage, since: datetime, until: datetime,
                   size: timedelta) -> list[chart.Bucket]:
    count = int((until - since) / size)
    per_minute = size / timedelta(minutes=1)
    found: dict[int, dict[str, int]] = {}
    for number, status, runs in await storage.runs.count_runs(since, until, size):
        if 0 <= number < count:
            found.setdefault(number, {})[status] = runs
    return [chart.Bucket(f"{since + size * n:%H:%M}",
                         {s: c if per_minute == 1 else round(c / per_minute, 2)
                          for s, c in found.get(n, {}).items()})
            for n in range(count)]


def _totals(buckets: list[chart.Bucket], size: timedelta) -> dict[str, float]:
    minutes = size / timedelta(minutes=1)
    totals: dict[str, float] = {}
    for bucket in buckets:
        for status, value in bucket.counts.items():
            totals[status] = totals.get(status, 0) + value * minutes
    return {s: round(v) for s, v in totals.items()}
