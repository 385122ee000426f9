"""What the run pages show: the run log filtered and paged (every list a page of its SQL
query), and one run's steps as a timeline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.console import chart
from gateway.console.paging import MAX_FILTER, PAGE, position, position_text
from gateway.core.encoding import dumps_pretty
from gateway.core.settings import parse_duration
from gateway.storage import Storage
from gateway.storage.contract import Position
from gateway.tracing import trace_id_of, trace_link

RUN_STATUSES = ("success", "failed", "not_run", "rejected")
SOURCES = ("http", "cli", "schedule", "recurring", "trigger")
SEARCH_SCAN = 10_000  # runs a text search reads for one page (the next page reads on)


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
    user: str = ""  # the caller: a user's id or e-mail
    errors: list[str] = field(default_factory=list)
    since_at: datetime | None = None
    until_at: datetime | None = None
    position: Position | None = None
    searched_to: datetime | None = None  # a text search's page stopped reading here

    def query(self, **changes: str) -> dict[str, str]:
        """The filters as query parameters (those set), with `changes`."""
        keys = ("workflow", "status", "source", "since", "until", "text", "before", "user")
        values = {k: getattr(self, k) for k in keys} | changes
        return {k: v for k, v in values.items() if v}


def _moment(text: str, now: datetime) -> datetime:
    """`30m`, `1h`, `7d` ago, or an ISO 8601 date or time (UTC unless it says otherwise)."""
    try:
        return now - parse_duration(text)
    except (ValueError, OverflowError):
        moment = datetime.fromisoformat(text)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_filters(query: Mapping[str, str], now: datetime) -> RunFilters:
    values = {k: str(query.get(k, "")).strip() for k in (
        "workflow", "status", "source", "since", "until", "text", "before", "user")}
    found = RunFilters(values["workflow"], values["status"], values["source"], values["since"],
                       values["until"], values["text"], values["before"], values["user"])
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


async def runs(storage: Storage, f: RunFilters,
               labels: Mapping[str, str] | None = None
               ) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the run log, newest first, and the position of the next page (if any).

    A text search, or one by user, reads `SEARCH_SCAN` runs a page at most, so that it
    costs the same however long the log: when those hold fewer than a page of matches, the
    page shows what they held, says how far back it read (`f.searched_to`) and its next
    page reads on."""
    reach = None
    if f.text or f.user:  # what no index serves reads a bounded stretch of the log a page
        found, reach = await storage.runs.search_runs(
            f.text, workflow=f.workflow or None, status=f.status or None, since=f.since_at,
            until=f.until_at, source=f.source or None, before=f.position, limit=PAGE + 1,
            scan=SEARCH_SCAN, user=f.user or None)
    else:
        found = await storage.runs.page_runs(
            workflow=f.workflow or None, status=f.status or None, since=f.since_at,
            limit=PAGE + 1, source=f.source or None, until=f.until_at, before=f.position,
            user=f.user or None)
    older = None
    if len(found) > PAGE:
        found = found[:PAGE]
        older = position_text(found[-1]["started_at"], found[-1]["id"])
    elif reach is not None:
        f.searched_to = reach[0]
        older = position_text(*reach)
    rows = [run_row(r) for r in found]
    for row in rows:
        row["label"] = (labels or {}).get(row["workflow"], "")
    return rows, older


def run_row(run: Mapping[str, Any]) -> dict[str, Any]:
    error = run.get("error") or {}
    identity = run.get("identity") or {}
    return {"id": str(run.get("id")), "workflow": str(run.get("workflow")),
            "user": str(identity.get("email") or identity.get("user_id") or ""),
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


def run_detail(run: dict[str, Any], ui_url: str | None = None) -> dict[str, Any]:
    """What the run page shows of `run`; its trace linked where `ui_url` shows traces."""
    total = _number(run.get("duration_ms")) or 0.0
    trace_id = trace_id_of(run)
    lines = timeline(run.get("steps"))
    total = max([total, *(s.offset_ms + s.duration_ms for s in lines)])
    identity = run.get("identity") or {}
    return {"run": run_row(run), "total_ms": total, "steps": lines,
            "bars": [chart.timeline_bar(s.offset_ms, s.duration_ms, total, s.status)
                     for s in lines],
            "identity": dumps_pretty(identity), "params": dumps_pretty(run.get("params")),
            "result": dumps_pretty(run.get("result")),
            "error": run.get("error") or None, "location": str(
                (run.get("error") or {}).get("location") or ""),
            "trace_id": trace_id, "trace_url": trace_link(ui_url, trace_id)}
