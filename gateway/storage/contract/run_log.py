"""The run log's role in the storage contract: `RunLog`, what it may hold back
(`RunLogLimits`) and what it reports of a workflow's runs (`RunStats`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from gateway.storage.contract.job_store import Position


@dataclass(frozen=True, slots=True)
class RunLogLimits:
    """How much the run log may hold back: `max_queue` runs waiting to be written (beyond
    it, runs are dropped and counted), and `flush_seconds` spent at shutdown writing them;
    and how much of each of a run's values it keeps (`max_value_bytes`: see `codec.run_row`)."""

    max_queue: int = 10_000
    flush_seconds: float = 10.0
    max_value_bytes: int = 16_384


@dataclass(frozen=True, slots=True)
class RunStats:
    """One workflow's runs in a window: how many, how many failed, and the durations (ms)
    at the 50th and 99th percentile by nearest rank (None when no run of it was timed), as
    the rollup's histogram gives them: within 9% (see `storage.rollup`)."""

    workflow: str
    runs: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None


class RunLog(Protocol):
    """The run log: every run, buffered on `record_run` and written in batches."""

    # Never raises and never blocks: the run log must not fail the run it logs.
    def record_run(self, run: Mapping[str, Any]) -> None: ...
    async def flush_runs(self) -> None: ...
    # Set before `open()`; the defaults hold otherwise.
    def configure(self, limits: RunLogLimits) -> None: ...
    # Runs lost since start: the queue was full, or the database refused even their summary.
    @property
    def dropped(self) -> int: ...
    # Runs whose details the database refused, kept as their summary (id, status, times).
    @property
    def summarised(self) -> int: ...
    # Runs waiting to be written now (a metric).
    @property
    def queued(self) -> int: ...
    # Runs recorded since start, to be written, and the characters of their documents (when
    # to trim the log again).
    @property
    def recorded(self) -> int: ...
    @property
    def recorded_chars(self) -> int: ...
    async def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        *,
        source: str | None = None,
        until: datetime | None = None,
        text: str | None = None,
        user: str | None = None,
    ) -> list[dict[str, Any]]: ...
    # `list_runs`, one page of it: the runs after `before` (newest first), keyset-paged;
    # `job`: only the runs of that job (its attempts).
    async def page_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        *,
        source: str | None = None,
        until: datetime | None = None,
        before: Position | None = None,
        job: str | None = None,
        user: str | None = None,
    ) -> list[dict[str, Any]]: ...
    # `page_runs` with a `text`, over one stretch of the log: of the newest `scan` runs the
    # other filters select (after `before`), the first `limit` whose JSON holds the text;
    # and, when the stretch held `scan` runs and fewer than `limit` matched, the last run
    # it read: where the next stretch begins (None: the search reached the log's end).
    async def search_runs(
        self,
        text: str,
        *,
        workflow: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        source: str | None = None,
        before: Position | None = None,
        limit: int = 50,
        scan: int = 10_000,
        user: str | None = None,
    ) -> tuple[list[dict[str, Any]], Position | None]: ...
    # Runs started in [since, until) by status, in buckets of `bucket` counted from `since`:
    # (bucket number, status, runs), the empty buckets left out; from the rollup, which
    # counts each run in the minute it started in.
    async def count_runs(self, since: datetime, until: datetime,
                         bucket: timedelta) -> list[tuple[int, str, int]]: ...
    # Per workflow, its runs started since `since` (see `RunStats`), by name: counted from
    # the minute `since` is in, and timed from its ten-minute period.
    async def run_stats(self, since: datetime) -> list[RunStats]: ...
    # When the latest run of each of these workflows started (those never run left out).
    async def last_runs(self, workflows: Sequence[str]) -> dict[str, datetime]: ...
    async def get_run(self, id: str) -> dict[str, Any] | None: ...
    async def purge_runs(self, now: datetime, keep: timedelta, keep_failed: timedelta) -> int: ...
    # Deletes the oldest runs (in chunks) until at most `max_rows` remain and their estimated
    # size (`run_size`) is at most `max_bytes`; None is no limit. Returns how many it deleted.
    async def trim_runs(self, max_rows: int | None, max_bytes: int | None) -> int: ...
    # The estimated bytes one run takes on disk, from the newest runs (0 when there are none).
    async def run_size(self) -> int: ...
