"""What each console page shows, read from the stores: every list a page of its SQL query,
every figure an aggregate the database computes (nothing loads the whole run log)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.console import chart
from gateway.core.encoding import dumps_pretty, iso, parse_iso
from gateway.core.redaction import redact
from gateway.core.settings import parse_duration
from gateway.runtime.model import Registry, Workflow
from gateway.scheduler.recurring import next_fire
from gateway.storage import JOB_STATUSES, Job, Storage
from gateway.storage.contract import Position, RunStats

PAGE = 50  # runs or jobs per page
FAILURES = 20  # the last hour's failures the overview lists
MAX_FILTER = 200  # characters of a filter's value
RUN_STATUSES = ("success", "failed", "not_run", "rejected")
SOURCES = ("http", "cli", "schedule", "recurring", "trigger")
DAY_BUCKET = timedelta(minutes=15)
FIGURES_SECONDS = 10.0  # how long the day's aggregates are reused
SEARCH_SCAN = 10_000  # runs a text search reads for one page (the next page reads on)


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


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the Workflows page."""

    name: str
    kind: str
    route: str
    access: str
    label: str
    last_run: datetime | None
    stats: RunStats | None
    next_fire: datetime | str | None
    paused: bool


async def workflows(storage: Storage, figures: Figures, registry: Registry,
                    now: datetime) -> list[Entry]:
    last = await storage.runs.last_runs(sorted({*registry.workflows, *registry.events,
                                                *registry.triggers, *registry.recurring}))
    stats = {s.workflow: s for s in await day_stats(storage, figures, now)}
    paused = set(await storage.jobs.paused())
    every = "*" in paused
    entries = []
    prefix = registry.settings.prefix

    def entry(name: str, kind: str, route: str, access: str, label: str,
              fire: datetime | str | None = None) -> Entry:
        return Entry(name, kind, route, access, label, last.get(name), stats.get(name), fire,
                     every or name in paused)

    for wf in registry.workflows.values():
        entries.append(entry(wf.name, "api workflow", _route(wf, prefix), wf.auth, wf.label))
    for event in registry.events.values():
        entries.append(entry(event.name, "custom event", "called by trigger_event", "-",
                             event.label))
    for trigger in registry.triggers.values():
        entries.append(entry(trigger.name, "database trigger",
                             f"on {', '.join(sorted(trigger.events))} of {trigger.type}",
                             "runs as admin", trigger.run.label))
    for rec in registry.recurring.values():
        schedule = rec.cron or (f"every {rec.every}" if rec.every else "per record")
        entries.append(entry(rec.name, "recurring event", schedule,
                             "runs as admin", f"runs {rec.workflow}" if rec.workflow else "",
                             await _next_fire(storage, rec, now)))
    return sorted(entries, key=lambda e: (e.kind, e.name))


def _route(wf: Workflow, prefix: str) -> str:
    if not wf.expose:
        return "not exposed (scheduled or called only)"
    return f"{wf.method} {prefix}/api/1.1/wf/{wf.name}"


async def _next_fire(storage: Storage, event: Any, now: datetime) -> datetime | str:
    """A global recurring event's pending tick, or the next it will get (as `gateway jobs
    list` says); a per-record event's ticks are its jobs."""
    if event.per_record:
        return "per record (see Jobs)"
    last = await storage.jobs.last_tick(event.name)
    if last is not None and last.status == "pending":
        return last.due_at
    return next_fire(event, max(now, last.due_at) if last else now)


@dataclass(slots=True)
class RunFilters:
    """The run log's filters as the form gave them, and what they mean."""

    workflow: str = ""
    status: str = ""
    source: str = ""
    since: str = ""
    until: str = ""
    text: str = ""
    before: str = ""
    errors: list[str] = field(default_factory=list)
    since_at: datetime | None = None
    until_at: datetime | None = None
    position: Position | None = None
    searched_to: datetime | None = None  # a text search's page stopped reading here

    def query(self, **changes: str) -> dict[str, str]:
        """The filters as query parameters (those set), with `changes`."""
        keys = ("workflow", "status", "source", "since", "until", "text", "before")
        values = {k: getattr(self, k) for k in keys} | changes
        return {k: v for k, v in values.items() if v}


def _moment(text: str, now: datetime) -> datetime:
    """`30m`, `1h`, `7d` ago, or an ISO 8601 date or time (UTC unless it says otherwise)."""
    try:
        return now - parse_duration(text)
    except (ValueError, OverflowError):
        moment = datetime.fromisoformat(text)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def position(text: str) -> Position:
    """A list's place from its text (`<ISO time>|<id>`); ValueError if it is none."""
    when, bar, id = text.partition("|")
    if not bar or not id or len(id) > MAX_FILTER:
        raise ValueError(text)
    return parse_iso(when), id


def position_text(moment: datetime, id: str) -> str:
    return f"{iso(moment)}|{id}"


def run_filters(query: Mapping[str, str], now: datetime) -> RunFilters:
    values = {k: str(query.get(k, "")).strip() for k in (
        "workflow", "status", "source", "since", "until", "text", "before")}
    found = RunFilters(values["workflow"], values["status"], values["source"], values["since"],
                       values["until"], values["text"], values["before"])
    for key, value in values.items():
        if len(value) > MAX_FILTER or not value.isprintable():
            found.errors.append(f"{key}: at most {MAX_FILTER} printable characters")
            setattr(found, key, "")
    if found.status and found.status not in RUN_STATUSES:
        found.errors.append(f"status: one of {', '.join(RUN_STATUSES)}")
        found.status = ""
    for key in ("since", "until"):
        text = getattr(found, key)
        if not text:
            continue
        try:
            setattr(found, f"{key}_at", _moment(text, now))
        except (ValueError, OverflowError):
            found.errors.append(f"{key}: a duration (30m, 1h, 7d) or an ISO 8601 date")
            setattr(found, key, "")
    if found.before:
        try:
            found.position = position(found.before)
        except (ValueError, OverflowError):
            found.errors.append("before: not a place in the run log; showing the newest")
            found.before = ""
    return found


async def runs(storage: Storage, f: RunFilters) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the run log, newest first, and the position of the next page (if any).

    A text search reads `SEARCH_SCAN` runs a page at most, so that it costs the same
    however long the log: when those hold fewer than a page of matches, the page shows what
    they held, says how far back it read (`f.searched_to`) and its next page reads on."""
    reach = None
    if f.text:
        found, reach = await storage.runs.search_runs(
            f.text, workflow=f.workflow or None, status=f.status or None, since=f.since_at,
            until=f.until_at, source=f.source or None, before=f.position, limit=PAGE + 1,
            scan=SEARCH_SCAN)
    else:
        found = await storage.runs.page_runs(
            workflow=f.workflow or None, status=f.status or None, since=f.since_at,
            limit=PAGE + 1, source=f.source or None, until=f.until_at, before=f.position)
    older = None
    if len(found) > PAGE:
        found = found[:PAGE]
        older = position_text(found[-1]["started_at"], found[-1]["id"])
    elif reach is not None:
        f.searched_to = reach[0]
        older = position_text(*reach)
    return [run_row(r) for r in found], older


def run_row(run: Mapping[str, Any]) -> dict[str, Any]:
    error = run.get("error") or {}
    return {"id": str(run.get("id")), "workflow": str(run.get("workflow")),
            "status": str(run.get("status")), "started_at": run.get("started_at"),
            "duration_ms": _number(run.get("duration_ms")),
            "source": str(run.get("source") or ""),
            "error": f"{error.get('code')}: {error.get('message')}" if error else ""}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


@dataclass(frozen=True, slots=True)
class StepLine:
    """One step of a run's timeline (a custom event's steps follow it, one level deeper)."""

    number: str
    depth: int
    id: str
    action: str
    status: str
    offset_ms: float
    duration_ms: float
    reason: str
    facts: str


def timeline(steps: Any, depth: int = 0, start: float = 0.0, prefix: str = "") -> list[StepLine]:
    lines: list[StepLine] = []
    offset = start
    for number, step in enumerate(steps if isinstance(steps, list) else [], 1):
        if not isinstance(step, dict):
            continue
        took = _number(step.get("duration_ms")) or 0.0
        facts = {k: v for k, v in step.items()
                 if k not in ("id", "action", "status", "duration_ms", "reason", "steps")}
        label = f"{prefix}{number}"
        lines.append(StepLine(label, depth, str(step.get("id") or "-"),
                              str(step.get("action")), str(step.get("status", "?")),
                              offset, took, str(step.get("reason") or ""),
                              dumps_pretty(facts) if facts else ""))
        if depth < 10:
            lines.extend(timeline(step.get("steps"), depth + 1, offset, f"{label}."))
        offset += took
    return lines


def run_detail(run: dict[str, Any]) -> dict[str, Any]:
    total = _number(run.get("duration_ms")) or 0.0
    lines = timeline(run.get("steps"))
    total = max([total, *(s.offset_ms + s.duration_ms for s in lines)])
    identity = run.get("identity") or {}
    return {"run": run_row(run), "total_ms": total, "steps": lines,
            "bars": [chart.timeline_bar(s.offset_ms, s.duration_ms, total, s.status)
                     for s in lines],
            "identity": dumps_pretty(identity), "params": dumps_pretty(run.get("params")),
            "result": dumps_pretty(run.get("result")),
            "error": run.get("error") or None, "location": str(
                (run.get("error") or {}).get("location") or "")}


@dataclass(slots=True)
class JobFilters:
    status: str = ""
    workflow: str = ""
    before: str = ""
    errors: list[str] = field(default_factory=list)
    position: Position | None = None

    def query(self, **changes: str) -> dict[str, str]:
        values = {"status": self.status, "workflow": self.workflow,
                  "before": self.before} | changes
        return {k: v for k, v in values.items() if v}


def job_filters(query: Mapping[str, str]) -> JobFilters:
    status, workflow, before = (str(query.get(k, "")).strip()
                                for k in ("status", "workflow", "before"))
    found = JobFilters(status, workflow, before)
    if found.status and found.status not in JOB_STATUSES:
        found.errors.append(f"status: one of {', '.join(JOB_STATUSES)}")
        found.status = ""
    if len(found.workflow) > MAX_FILTER or not found.workflow.isprintable():
        found.errors.append(f"workflow: at most {MAX_FILTER} printable characters")
        found.workflow = ""
    if found.before:
        try:
            found.position = position(found.before)
        except (ValueError, OverflowError):
            found.errors.append("before: not a place in the jobs; showing the latest")
            found.before = ""
    return found


async def jobs(storage: Storage, f: JobFilters) -> tuple[list[Job], str | None]:
    found = await storage.jobs.page_jobs(f.status or None, f.workflow or None, PAGE + 1,
                                         before=f.position)
    older = None
    if len(found) > PAGE:
        found = found[:PAGE]
        older = position_text(found[-1].due_at, found[-1].id)
    return found, older


async def job_runs(storage: Storage, job: Job) -> list[dict[str, Any]]:
    """The job's runs (one an attempt), newest first: the runs that name it (the run log
    keeps each job run's job id and attempt), looked for while the job was live."""
    if job.created_at is None:
        return []
    until = (job.finished_at or datetime.now(UTC)) + timedelta(seconds=1)
    found = await storage.runs.page_runs(workflow=job.workflow, source=job.source,
                                         since=job.created_at, until=until, limit=FAILURES,
                                         job=job.id)
    return [run_row(r) for r in found]


def job_detail(job: Job, hidden: frozenset[str], registry: Registry) -> dict[str, Any]:
    target = registry.workflows.get(job.workflow)
    limit = target.retry.max_attempts if target is not None else None
    recurring = registry.recurring.get(job.workflow)
    if recurring is not None and recurring.retry is not None:
        limit = recurring.retry.max_attempts
    return {"job": job, "data": dumps_pretty(redact(dict(job.data), hidden)),
            "max_attempts": limit}
