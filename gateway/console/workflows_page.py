"""What the workflows page shows: each workflow, event and trigger with its route, its
day's figures and, for a recurring event, its next fire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.console.overview_page import Figures, day_stats
from gateway.runtime.model import Registry, Workflow
from gateway.scheduler.recurring import next_fire
from gateway.storage import Storage
from gateway.storage.contract import RunStats


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
