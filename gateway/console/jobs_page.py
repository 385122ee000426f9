"""What the job pages show: the jobs filtered and paged, and one job with its attempts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.console.overview_page import FAILURES
from gateway.console.paging import MAX_FILTER, PAGE, position, position_text
from gateway.console.runs_page import run_row
from gateway.core.encoding import dumps_pretty
from gateway.core.redaction import redact
from gateway.runtime.model import Registry
from gateway.scheduler.listing import key_text, label_of, params_text, scheduled_by, waits_text
from gateway.storage import JOB_STATUSES, Job, Storage
from gateway.storage.contract import Checkpoint, KeyUse, Position


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


def job_rows(jobs: list[Job], hidden: frozenset[str], registry: Registry,
             use: KeyUse = ({}, {}, frozenset()),
             now: datetime | None = None) -> list[dict[str, Any]]:
    """What the jobs list shows of each job besides the job itself: its label, who
    scheduled it, its parameters (secrets cut out, cut short; the template escapes
    them), its flow control keys (secrets cut out) and why it waits (`use`: how much of
    its keys is used `now`)."""
    return [{"job": job, "label": label_of(registry, job), "by": scheduled_by(job),
             "params": params_text(job, hidden), "key": redact(key_text(job), hidden),
             "waits": "" if now is None else waits_text(job, use, now)}
            for job in jobs]


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


def job_steps(registry: Registry, job: Job) -> list[dict[str, Any]]:
    """The steps of what the job runs, as the config says now (what a retry from a step
    offers): the number, action and id of each; none when its workflow is gone."""
    workflow = registry.workflows.get(job.workflow)
    recurring = registry.recurring.get(job.workflow)
    trigger = registry.triggers.get(job.workflow)
    if recurring is not None:
        workflow = recurring.steps if recurring.workflow is None else \
            registry.workflows.get(recurring.workflow)
    elif trigger is not None:
        workflow = trigger.run
    if workflow is None:
        return []
    return [{"number": s.index + 1, "action": s.action.name, "id": s.id}
            for s in workflow.steps]


async def job_checkpoints(storage: Storage, job: Job) -> list[Checkpoint]:
    """The steps earlier runs of the job checkpointed, which a retry restores."""
    if job.claims == 0:
        return []
    return await storage.jobs.checkpoints(job.id)


def job_detail(job: Job, hidden: frozenset[str], registry: Registry) -> dict[str, Any]:
    target = registry.workflows.get(job.workflow)
    limit = target.retry.max_attempts if target is not None else None
    recurring = registry.recurring.get(job.workflow)
    if recurring is not None and recurring.retry is not None:
        limit = recurring.retry.max_attempts
    return {"job": job, "data": dumps_pretty(redact(dict(job.data), hidden)),
            "max_attempts": limit}
