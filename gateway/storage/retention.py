"""Retention: what the stores keep is bounded in time and size. One task per process
deletes runs past their retention and beyond the run log's bound (trimmed as runs arrive),
users' tokens past their lifetime or idle lapse, idempotency keys past their ttl, rate
counters of windows that ended, and jobs' step checkpoints no retry can use (their job is
done, or they are older than any run the log keeps)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.core.clock import Clock
from gateway.core.errors import GatewayError
from gateway.core.settings import Settings
from gateway.storage import RunLog, RunLogLimits, Storage
from gateway.storage.contract import UserStore

MIN_PURGE_SECONDS = 1.0
# Between two passes, the retention task looks this often at how many runs were recorded,
# and trims the run log once a tenth of its bound arrived (at most this many runs).
GROWTH_SECONDS = 1.0
SETTLE_SECONDS = 5.0
ROW_BYTES = 1024  # what a run takes beyond its document: columns, row header, index entries
log = logging.getLogger("gateway")


async def retain_forever(storage: Storage, settings: Settings, clock: Clock,
                         stop: asyncio.Event) -> None:
    """The retention task: once every `run_log.purge_interval`, delete runs past their
    retention (then the oldest beyond `run_log.max_rows` and `max_bytes`) and users' tokens
    past their lifetime or idle lapse; in between, trim the run log to its bound each time
    a tenth of its bound was recorded (`trim_due`), and once `SETTLE_SECONDS` after the last
    runs came (a run still being written during a trim is not seen by it); until `stop` is
    set."""
    interval = max(settings.run_log_purge_interval.total_seconds(), MIN_PURGE_SECONDS)
    runs, loop = storage.runs, asyncio.get_running_loop()
    seen, came = runs.recorded, loop.time()  # (runs may have come before the task began)
    while not stop.is_set():
        trimmed, began, due = _recorded(runs), loop.time(), loop.time() + interval
        await purge_runs_once(runs, settings, clock)
        await purge_tokens_once(storage.users, settings, clock)
        await purge_keys_once(storage, clock)
        await purge_checkpoints_once(storage, settings, clock)
        while not stop.is_set() and loop.time() < due:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(GROWTH_SECONDS, due - loop.time()))
            now = loop.time()
            if runs.recorded != seen:
                seen, came = runs.recorded, now
            if trim_due(settings, _recorded(runs), trimmed) or (
                    came > began - SETTLE_SECONDS and now >= came + SETTLE_SECONDS):
                trimmed, began = _recorded(runs), now
                await trim_runs_once(runs, settings)


def _recorded(runs: RunLog) -> tuple[int, int]:
    return runs.recorded, runs.recorded_chars


def trim_due(settings: Settings, now: tuple[int, int], then: tuple[int, int]) -> bool:
    """Whether a tenth of the run log's bound was recorded between `then` and `now` (each
    the runs recorded since start and their documents' characters): in rows, or in bytes (the
    documents and `ROW_BYTES` a row); so that the log passes its bound by a tenth at most,
    while a trim (which reads as many of the log's index entries as its bound allows rows)
    comes no more often than the bound calls for."""
    added, chars = now[0] - then[0], now[1] - then[1]
    rows, size = settings.run_log_max_rows, settings.run_log_max_bytes
    return ((rows is not None and added >= max(1, rows // 10))
            or (size is not None and chars + added * ROW_BYTES >= max(1, size // 10)))


async def purge_runs_once(runs: RunLog, settings: Settings, clock: Clock) -> int:
    """One pass of the retention task; returns how many runs it deleted."""
    try:
        deleted = await runs.purge_runs(clock(), settings.run_retention,
                                        settings.failed_run_retention)
    except GatewayError as exc:
        log.warning("could not purge old runs: %s", exc.message)
        return 0
    if deleted:
        log.info("deleted %d run(s) past their retention", deleted)
    return deleted + await trim_runs_once(runs, settings)


async def trim_runs_once(runs: RunLog, settings: Settings) -> int:
    """The oldest runs beyond `run_log.max_rows` and `max_bytes` deleted; how many."""
    if settings.run_log_max_rows is None and settings.run_log_max_bytes is None:
        return 0
    try:
        deleted = await runs.trim_runs(settings.run_log_max_rows, settings.run_log_max_bytes)
    except GatewayError as exc:
        log.warning("could not trim the run log: %s", exc.message)
        return 0
    if deleted:
        log.info("deleted %d run(s) beyond the run log's size", deleted)
    return deleted


async def purge_tokens_once(users: UserStore, settings: Settings, clock: Clock) -> int:
    now = clock()
    try:
        return await users.purge_tokens(now, now - settings.idle_lapse)
    except GatewayError as exc:
        log.warning("could not purge old tokens: %s", exc.message)
        return 0


async def purge_keys_once(storage: Storage, clock: Clock) -> int:
    """Idempotency keys past their ttl and rate counters of windows that ended."""
    now = clock()
    try:
        return (await storage.idempotency.purge_keys(now)
                + await storage.rates.purge_counters(now))
    except GatewayError as exc:
        log.warning("could not purge idempotency keys: %s", exc.message)
        return 0


async def purge_checkpoints_once(storage: Storage, settings: Settings, clock: Clock) -> int:
    """Jobs' step checkpoints of jobs that are done (or gone), and those older than the
    run log keeps failed runs: here rather than as each job ends, which is the scheduler's
    hot path."""
    kept = max(settings.run_retention, settings.failed_run_retention)
    try:
        return await storage.jobs.purge_checkpoints(clock() - kept)
    except GatewayError as exc:
        log.warning("could not purge jobs' checkpoints: %s", exc.message)
        return 0


def run_log_limits(settings: Settings) -> RunLogLimits:
    return RunLogLimits(settings.run_log_max_queue,
                        settings.run_log_flush_timeout.total_seconds(),
                        settings.run_log_max_value_bytes)
