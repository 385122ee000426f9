"""The commit of a run that succeeded: the jobs it scheduled and the database-trigger runs
its changes call for, written in the run's own transaction (`Storage.begin`), so that they
commit with its record changes or not at all. A job's run ends its job there too
(`finish.settle`): a run whose lease expired while it ran, its job claimed again, rolls
back instead, so that a job's writes commit once however late its worker was. The next tick
of a per-record series, which the scheduler made before the tick ran (its `JobRun`'s
`follow`), is written there too, unbounded (it takes the place of the tick that ends), so
that the series cannot end between the tick's end and its next.

A trigger fires once per record per run, however often the run changed the record, with
the record as the run first saw it (`before`, null on create) and as the run left it
(`after`, null on delete). Its `only_when` is decided here, so that a trigger that does not
apply costs no job and no run. Changes made by trigger runs fire no trigger.

The jobs are bounded there too: a run whose jobs would leave more pending than
`limits.max_pending_jobs` allow, or `max_pending_jobs_per_workflow` for a workflow it adds
to, fails with 503 `TOO_MANY_JOBS` (a job's run is retried later), and its transaction rolls
back whole: no job of it, and none of its record changes, is kept.

A scheduled job of a workflow (or custom event) with `concurrency` gets its key here: the
key template rendered with the job's parameters as its run will see them (coerced; a
parameter of a data type is its id), prefixed with the workflow's name, so that the keys
of two workflows never meet. A key longer than `MAX_KEY` characters keeps its start and a
hash of the whole. A key that fails to render, or renders empty, fails the scheduling run
(400 `INVALID_DATA`, nothing of it kept): a job without its key would run unguarded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import replace
from typing import Any

from gateway.core.encoding import dumps_lenient, roundtrip
from gateway.core.errors import GatewayError, InvalidDataError
from gateway.core.ids import new_id
from gateway.runtime.context import RunContext
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.model import Trigger, Workflow
from gateway.scheduler.finish import settle
from gateway.storage.contract import Change, Job, PendingBound

log = logging.getLogger("gateway.scheduler")
MAX_KEY = 200  # characters of a rendered concurrency key kept as they are


def event_of(change: Change) -> str:
    if change.before is None:
        return "create"
    return "delete" if change.after is None else "change"


class Enqueuer:
    """The `on_commit` hook that writes a run's jobs (see `with_jobs`)."""

    def __init__(self, interpreter: Interpreter) -> None:
        self.interpreter = interpreter
        by_type: dict[str, list[Trigger]] = {}
        for trigger in interpreter.registry.triggers.values():
            by_type.setdefault(trigger.type, []).append(trigger)
        self.by_type = by_type
        settings = interpreter.registry.settings
        self.bound = PendingBound(settings.max_pending_jobs,
                                  settings.max_pending_jobs_per_workflow)

    async def __call__(self, ctx: RunContext) -> None:
        storage = self.interpreter.storage
        if storage is None:
            return
        if ctx.job is not None:  # a newer claim of the job refuses it: nothing is kept
            await settle(storage.jobs, ctx.job.end("done", self.interpreter.clock(), ctx.run_id))
        jobs = [await self.keyed(self.stamped(job, ctx.trace), ctx) for job in ctx.jobs]
        if ctx.source != "trigger" and self.by_type:
            for index, change in enumerate(ctx.changes):
                if index % 100 == 99:
                    await asyncio.sleep(0)  # a run that changed 10,000 records: let others in
                for trigger in self.by_type.get(change.type, ()):
                    if event_of(change) in trigger.events and await self.applies(
                            trigger, ctx, change):
                        jobs.append(self.trigger_job(trigger, ctx, change))
        if jobs:  # past the bound on pending jobs, the run fails and nothing of it is kept
            await storage.jobs.enqueue(jobs, self.bound)
            ctx.jobs.clear()

    def target(self, job: Job) -> Workflow | None:
        """The API workflow or custom event a scheduled job runs (None: gone, or not one)."""
        if job.source != "schedule":
            return None
        registry = self.interpreter.registry
        return (registry.events if job.data.get("event") else registry.workflows).get(
            job.workflow)

    async def keyed(self, job: Job, ctx: RunContext) -> Job:
        """A scheduled job of a workflow with `concurrency`, with its key and limit."""
        target = self.target(job)
        if target is None or target.concurrency is None or job.flow_key is not None:
            return job
        try:
            params = target.coerce(dict(job.data.get("params") or {}))
            value = await self.interpreter.evaluate(
                target.concurrency.key, self.interpreter.scope(ctx, params, None))
        except GatewayError as exc:
            raise InvalidDataError(
                f"the concurrency key of '{job.workflow}' could not be made from the job's "
                f"params: {exc.message}") from exc
        except Exception as exc:  # noqa: BLE001 - a template's own error, said plainly
            raise InvalidDataError(
                f"the concurrency key of '{job.workflow}' could not be made from the job's "
                f"params: {type(exc).__name__}: {exc}") from exc
        key = value if isinstance(value, str) else "" if value is None else dumps_lenient(value)
        if not key.strip():
            raise InvalidDataError(
                f"the concurrency key of '{job.workflow}' is empty for the job's params: "
                "a job needs a key (give every job one, e.g. a default in the template)")
        return replace(job, flow_key=f"{job.workflow}:{bounded_key(key)}",
                       flow_limit=target.concurrency.limit)

    def stamped(self, job: Job, trace: str | None) -> Job:
        """A scheduled job with the version of the definition it was scheduled under (the
        run's registry's), which its run compares with the one it runs; and, when the run
        was traced, its span (`trace`), which the job's run links to."""
        if trace is not None:
            job = replace(job, data={**job.data, "trace": trace})
        if job.source != "schedule" or "version" in job.data:
            return job
        target = self.target(job)
        if target is None or not target.version:
            return job
        return replace(job, data={**job.data, "version": target.version})

    async def applies(self, trigger: Trigger, ctx: RunContext, change: Change) -> bool:
        """The trigger's `only_when`; one that fails to evaluate runs, so that its run
        records the error rather than the trigger being silently skipped."""
        condition = trigger.run.only_when
        if condition is None:
            return True
        scope = self.interpreter.scope(ctx, {}, None, names(roundtrip(change.before),
                                                            roundtrip(change.after)))
        try:
            return bool(await self.interpreter.evaluate(condition, scope))
        except Exception:  # noqa: BLE001 - the trigger's run will report it
            return True

    def trigger_job(self, trigger: Trigger, ctx: RunContext, change: Change) -> Job:
        return Job(id=new_id(ctx.now), workflow=trigger.name, source="trigger", due_at=ctx.now,
                   created_at=ctx.now, subject=change.id, data={
                       "params": {}, "identity": ctx.identity.record,
                       "depth": ctx.schedule_depth, "by_run": ctx.run_id, "type": change.type,
                       "before": roundtrip(change.before), "after": roundtrip(change.after),
                       **({} if ctx.trace is None else {"trace": ctx.trace})})


def bounded_key(key: str) -> str:
    """A rendered key as stored: as it is up to `MAX_KEY` characters; longer, its start
    and a hash of the whole (two long keys that differ anywhere stay two keys)."""
    if len(key) <= MAX_KEY:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{key[:MAX_KEY - 33]}#{digest}"


def names(before: Any, after: Any) -> dict[str, Any]:
    return {"before": before, "after": after}


def writes_jobs(interpreter: Interpreter) -> bool:
    """Whether `interpreter` is `with_jobs`'s."""
    return any(isinstance(hook, Enqueuer) for hook in interpreter.on_commit)


def with_jobs(interpreter: Interpreter) -> Interpreter:
    """`interpreter`, its successful runs writing their jobs and trigger runs."""
    interpreter.on_commit = (*interpreter.on_commit, Enqueuer(interpreter))
    return interpreter
