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

A scheduled job of a workflow (or custom event) with flow control (`concurrency`,
`throttle`, `debounce`, `singleton`) gets its keys here: each key template rendered with
the job's parameters as its run will see them (coerced; a parameter of a data type is its
id), prefixed with the workflow's name, so that the keys of two workflows never meet. A
key longer than `MAX_KEY` characters keeps its start and a hash of the whole. A key that
fails to render, or renders empty, fails the scheduling run (400 `INVALID_DATA`, nothing
of it kept): a job without its key would run unguarded. A debounced job is due `period`
after it was scheduled. The store skips a job whose singleton key is taken, and writes a
debounced job over the one waiting with its key; the run log says so (`ctx.flow`), and
`SKIPPED` counts them for /metrics.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from gateway.core.encoding import roundtrip
from gateway.core.errors import GatewayError, InvalidDataError
from gateway.core.ids import new_id
from gateway.runtime.context import RunContext
from gateway.runtime.flow_keys import SKIPPED, held_keys, render_key, shown_key
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.model import Flow, Trigger, Workflow
from gateway.scheduler.finish import settle
from gateway.storage.contract import Change, Job, PendingBound

log = logging.getLogger("gateway.scheduler")


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
                        jobs.append(await self.trigger_job(trigger, ctx, change))
        if jobs:  # past the bound on pending jobs, the run fails and nothing of it is kept
            written = await storage.jobs.enqueue(jobs, self.bound)
            if len(written) < len(jobs):
                self.unwritten(ctx, jobs, set(written))
            ctx.jobs.clear()

    def unwritten(self, ctx: RunContext, jobs: list[Job], written: set[str]) -> None:
        """Say in the run log (`ctx.flow`) and count (`SKIPPED`) the jobs flow control kept
        from being written: skipped by `singleton`, or written over the waiting job of
        their `debounce` key."""
        said: collections.Counter[tuple[str, str, str]] = collections.Counter()
        for job in jobs:
            if job.id in written:
                continue
            if job.single_key is not None:
                said[("skipped", job.workflow, job.single_key)] += 1
            elif job.debounce_key is not None:
                said[("debounced", job.workflow, job.debounce_key)] += 1
        for (what, workflow, key), count in said.items():
            SKIPPED[(workflow, "singleton" if what == "skipped" else "debounce")] += count
            jobs_said = "a job" if count == 1 else f"{count} jobs"
            ctx.flow.append(
                f"{jobs_said} of '{workflow}' skipped: a job with its singleton key "
                f"{shown_key(key)} waits or runs" if what == "skipped" else
                f"{jobs_said} of '{workflow}' debounced: the job waiting with its key "
                f"{shown_key(key)} runs instead, with the latest params")

    def target(self, job: Job) -> Workflow | None:
        """The API workflow or custom event a scheduled job runs (None: gone, or not one)."""
        if job.source != "schedule":
            return None
        registry = self.interpreter.registry
        return (registry.events if job.data.get("event") else registry.workflows).get(
            job.workflow)

    async def keyed(self, job: Job, ctx: RunContext) -> Job:
        """A scheduled job of a workflow with flow control, with its keys: each rendered
        over the job's params as its run will see them, prefixed with the workflow's name;
        a debounced job is due `period` after its scheduling."""
        target = self.target(job)
        flow = None if target is None else target.flow
        if target is None or flow is None or job.flow_key is not None:
            return job
        params = await self.params_of(target, job)
        name = f"event/{job.workflow}" if job.data.get("event") else job.workflow
        return await self.flowed(job, flow, self.interpreter.scope(ctx, params, None), ctx.now,
                                 name)

    async def flowed(self, job: Job, flow: Flow, scope: dict[str, Any], now: datetime,
                     name: str) -> Job:
        """`job` with the keys of `flow`, rendered in `scope` (a scheduled job's params, a
        trigger's `before` and `after`), each prefixed with `name`: an API workflow's own
        (as its HTTP calls' keys are), `event/<name>` for a custom event's, `trigger/<name>`
        for a trigger's, so that no two kinds of document share a key."""
        held = await held_keys(self.interpreter, name, flow, scope)
        keys: dict[str, Any] = {
            "flow_key": held.flow_key or held.throttle_key,  # under flow control: claimed by
            "flow_limit": held.flow_limit, "throttle_key": held.throttle_key,  # its keys
            "throttle_limit": held.throttle_limit, "throttle_ms": held.throttle_ms}
        if flow.debounce is not None:
            keys.update(debounce_key=await render_key(self.interpreter, name, "debounce",
                                                      flow.debounce.key, scope),
                        due_at=max(job.due_at, now + flow.debounce.period))
        if flow.singleton is not None:
            keys["single_key"] = await render_key(self.interpreter, name, "singleton",
                                                  flow.singleton, scope)
        return replace(job, **keys)

    async def params_of(self, target: Workflow, job: Job) -> dict[str, Any]:
        try:
            return target.coerce(dict(job.data.get("params") or {}))
        except GatewayError as exc:
            raise InvalidDataError(f"the job's params do not fit '{job.workflow}', so its flow "
                                   f"control keys could not be made: {exc.message}") from exc

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

    async def trigger_job(self, trigger: Trigger, ctx: RunContext, change: Change) -> Job:
        """The job of a trigger's run for one change: with its flow control's keys, made
        over `before` and `after`."""
        job = Job(id=new_id(ctx.now), workflow=trigger.name, source="trigger", due_at=ctx.now,
                  created_at=ctx.now, subject=change.id, data={
                      "params": {}, "identity": ctx.identity.record,
                      "depth": ctx.schedule_depth, "by_run": ctx.run_id, "type": change.type,
                      "before": roundtrip(change.before), "after": roundtrip(change.after),
                      **({} if ctx.trace is None else {"trace": ctx.trace})})
        flow = trigger.run.flow
        if flow is None:
            return job
        # A key reads the record whatever the event: `after` of a delete is the record as
        # it was, `before` of a create the record as made (`after._id` keys every event).
        before, after = roundtrip(change.before), roundtrip(change.after)
        scope = self.interpreter.scope(ctx, {}, None, names(before or after, after or before))
        return await self.flowed(job, flow, scope, ctx.now, f"trigger/{trigger.name}")


def names(before: Any, after: Any) -> dict[str, Any]:
    return {"before": before, "after": after}


def writes_jobs(interpreter: Interpreter) -> bool:
    """Whether `interpreter` is `with_jobs`'s."""
    return any(isinstance(hook, Enqueuer) for hook in interpreter.on_commit)


def with_jobs(interpreter: Interpreter) -> Interpreter:
    """`interpreter`, its successful runs writing their jobs and trigger runs."""
    interpreter.on_commit = (*interpreter.on_commit, Enqueuer(interpreter))
    return interpreter
