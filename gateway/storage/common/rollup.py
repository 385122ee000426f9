"""The run log's rollup: what the console's figures for a day are read from, so that they
cost the same with a thousand runs a day as with a million.

Each batch of runs the log writes adds, in the same transaction, its runs per minute by
workflow and status, and its durations per ten minutes by workflow as a histogram: bucket
`b` holds the durations from 2^(b/4) ms up to 2^((b+1)/4) ms, so a percentile read from it
(the geometric middle of its bucket) is within 9% of the exact one. Both backends key the
rows the same way; the rows of a batch are sorted, so that two instances adding to the same
rows on PostgreSQL take their locks in one order and never deadlock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from gateway.storage.contract import RunStats

PER_DOUBLING = 4
LOWEST = -40  # 2^-10 ms, about a microsecond: shorter durations count here
HIGHEST = 108  # 2^27 ms, about 37 hours: longer ones count here
KEEP = timedelta(days=2)  # how long rollup rows are kept (the console reads 24 hours)
PERIOD_MINUTES = 10  # the durations' period


_LOW, _HIGH = 2.0 ** (LOWEST / PER_DOUBLING), 2.0 ** (HIGHEST / PER_DOUBLING)


def bucket(ms: float) -> int:
    """The histogram bucket of a duration in milliseconds (`tally` inlines it)."""
    if not ms > _LOW:  # also NaN
        return LOWEST
    return HIGHEST if ms >= _HIGH else math.floor(math.log2(ms) * PER_DOUBLING)


def bucket_value(number: int) -> float:
    """What a bucket stands for: the geometric middle of its bounds, in milliseconds."""
    return round(float(2.0 ** ((number + 0.5) / PER_DOUBLING)), 3)


def duration(value: Any) -> float | None:
    """A run's `duration_ms` if it is a finite number (the rollup times only those)."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    return float(value) if type(value) is int else None


def minute_time(started: datetime) -> datetime:
    return started.replace(second=0, microsecond=0)


def period_time(started: datetime) -> datetime:
    return started.replace(minute=started.minute - started.minute % PERIOD_MINUTES,
                           second=0, microsecond=0)


Row = tuple[Any, ...]  # (id, workflow, status, started, document, duration)


def tally(rows: Iterable[Row]) -> tuple[list[tuple[str, str, str, int]],
                                        list[tuple[str, str, int, int]]]:
    """What `rows` (started as fixed-width ISO 8601 text, `encoding.iso`) add to the rollup:
    (minute, workflow, status, runs) and (period, workflow, bucket, runs), each sorted by
    its key, the times in the same form. Rows are grouped by the prefix of their start
    (`bucket` inlined): the run log's writer does this for every run."""
    minutes: dict[tuple[str, str, str], int] = {}
    durations: dict[tuple[str, str, int], int] = {}
    log2, floor = math.log2, math.floor
    for _, workflow, status, started, _, took in rows:
        key = (started[:16], workflow, status)  # up to the minute
        minutes[key] = minutes.get(key, 0) + 1
        if took is not None:
            number = (HIGHEST if took >= _HIGH else floor(log2(took) * PER_DOUBLING)) \
                if took > _LOW else LOWEST
            where = (started[:15], workflow, number)  # up to the ten minutes
            durations[where] = durations.get(where, 0) + 1
    return ([(at + ":00.000000Z", w, s, n) for (at, w, s), n in sorted(minutes.items())],
            [(at + "0:00.000000Z", w, b, n) for (at, w, b), n in sorted(durations.items())])


def stats(counts: Iterable[tuple[str, int, int]],
          histograms: Iterable[tuple[str, int, int]]) -> list[RunStats]:
    """Per workflow, from (workflow, runs, failed) and (workflow, bucket, runs) rows: its
    runs, failures and the p50 and p99 of its timed runs (nearest rank in the histogram)."""
    buckets: dict[str, list[tuple[int, int]]] = {}
    for workflow, number, runs in histograms:
        buckets.setdefault(workflow, []).append((int(number), int(runs)))
    found = []
    for workflow, runs, failed in counts:
        timed = sorted(buckets.get(workflow, []))
        found.append(RunStats(workflow, int(runs), int(failed or 0),
                              percentile(timed, 0.50), percentile(timed, 0.99)))
    return sorted(found, key=lambda s: s.workflow)


def percentile(buckets: Sequence[tuple[int, int]], p: float) -> float | None:
    """The value at rank ceil(p * n) of an ascending histogram, or None when it is empty."""
    total = sum(n for _, n in buckets)
    if total == 0:
        return None
    rank = max(1, math.ceil(p * total - 1e-9))
    seen = 0
    for number, n in buckets:
        seen += n
        if seen >= rank:
            return bucket_value(number)
    return bucket_value(buckets[-1][0])
