"""The scheduler: claims due jobs with a lease and runs them through the interpreter.

One `Scheduler` per process (in `gateway serve`'s lifespan, or `gateway worker`). It claims
at most as many jobs as it has free slots (`scheduler.concurrency`), renews the leases of
the jobs it runs, and sleeps until jobs are enqueued (a wake-up) or `scheduler.poll`
passes. A job's run that fails is retried per its workflow's `retry` (exponential backoff,
full jitter) and then stays `failed` with its error. Asked to stop, it claims nothing more,
gives running jobs `scheduler.grace` to finish, then stops them and gives them back.
A recurring event's tick is followed by its event's next as soon as it ends (a per-record
series' next is written with the tick's end, in the same transaction); one that was missed
(the tick after it was due before it started) ends `cancelled` without running, and its
`misfire` policy plans another (`gateway.scheduler.planner`).

Delivery is at least once: a worker that dies mid-run leaves its lease to expire, and the
job runs again elsewhere. What a job's run writes to the database commits once, though: in
the same transaction as the job's end, which a run whose lease was taken over cannot write
(see `gateway.scheduler.enqueue`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gateway.core.clock import Clock, utc_now
from gateway.core.encoding import escape
from gateway.core.errors import GatewayError, LeaseLostError
from gateway.core.ids import new_id
from gateway.runtime.context import ADMIN, ANONYMOUS, Identity
from gateway.runtime.flow_keys import SKIPPED
from gateway.runtime.interpreter import Interpreter, RunResult
from gateway.runtime.model import RecurringEvent, Workflow
from gateway.runtime.origin import JobRun, Origin
from gateway.scheduler.enqueue import names, writes_jobs
from gateway.scheduler.finish import Finisher, ending
from gateway.scheduler.planner import Planner
from gateway.scheduler.recurring import missed
from gateway.storage.contract import Job, JobEnd, Storage
from gateway.storage.contract.job_store import series_of

log = logging.getLogger("gateway.scheduler")
MAX_BACKOFF_SECONDS = 30.0
MIN_WAIT = 0.001  # a job due now that another worker took: wait a little, never spin
WAITING_EVERY = 1.0  # seconds between two reads of the jobs waiting for their keys
Target = tuple[Workflow, dict[str, Any], Mapping[str, Any] | None]


def changed_since(job: Job, workflow: Workflow) -> str | None:
    """What a scheduled job's run log says when its workflow's definition changed between
    the scheduling and the run (a reload): the job runs the definition of now, unlike
    Bubble's, which keeps the one it was scheduled with; None when it did not change."""
    scheduled = job.data.get("version")
    if job.source != "schedule" or not isinstance(scheduled, str) or not workflow.version \
            or scheduled == workflow.version:
        return None
    return (f"scheduled under version {scheduled} of the definition of '{job.workflow}'; "
            f"ran version {workflow.version} (the definition changed in between)")


class JobError(Exception):
    """A job that cannot run at all (its workflow is gone): failed, never retried."""


class Scheduler:
    """Runs the jobs of one registry from one store, through a `with_jobs` interpreter
    (whose commits end the jobs of runs that wrote)."""

    def __init__(self, interpreter: Interpreter, storage: Storage, clock: Clock = utc_now,
                 worker: str | None = None) -> None:
        self.use(interpreter)
        self.storage = storage
        self.clock = clock
        settings = interpreter.registry.settings
        self.lease = settings.scheduler_lease
        self.concurrency = settings.scheduler_concurrency
        self.poll = settings.scheduler_poll.total_seconds()
        self.grace = settings.scheduler_grace.total_seconds()
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"
        self.running: dict[str, asyncio.Task[None]] = {}
        self._ended: set[str] = set()  # running jobs whose end is counted, being written
        self.finisher = Finisher(storage.jobs, self.worker)
        self.planner = Planner(storage, clock)
        self._planned = 0.0
        # For `/metrics` (`probe`): how the jobs this process ran ended, and how late the
        # latest claimed jobs started.
        self.ended: collections.Counter[str] = collections.Counter()
        self.lag: float | None = None
        self._failures = 0  # claims that failed in a row (the database is away)
        # Set when a job with a concurrency key ended here: its key has room again, and the
        # jobs waiting for it are claimed at once (other instances hear of it from the
        # database, PostgreSQL's notification).
        self._freed = asyncio.Event()
        # Jobs waiting for their flow control keys, by workflow, as last read (when the
        # worker found fewer jobs to claim than it had room for), and when (monotonic).
        self.waiting: dict[str, int] = {}
        self._waiting_read = 0.0

    def use(self, interpreter: Interpreter) -> None:
        """Run jobs with a reloaded config's interpreter from now on (the `scheduler:`
        settings keep their values until a restart)."""
        assert writes_jobs(interpreter), "a scheduler's interpreter is with_jobs(...)'s"
        self.interpreter, self.registry = interpreter, interpreter.registry

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until `stop` is set; then drain."""
        renewer = asyncio.create_task(self._renew_forever(stop))
        try:
            # One poll interval first: what starts with it (the app's first retention pass,
            # its first requests) gets the database's connections before the scheduler.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll)
            while not stop.is_set():
                await self._plan_recurring()
                free = self.concurrency - len(self.running)
                if free <= 0:
                    await self._pause(stop, full=True)
                elif await self.claim(free) < free:
                    await self._pause(stop, full=False)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await self._drain()

    async def claim(self, limit: int) -> int:
        """Claim up to `limit` due jobs and start them; how many were claimed."""
        now = self.clock()
        try:
            jobs = await self.storage.jobs.claim(self.worker, now, now + self.lease, limit)
        except GatewayError as exc:
            if not self._failures:  # once per outage, not once per poll
                log.warning("could not claim jobs (retrying, less and less often): %s",
                            escape(exc.message))
            self._failures += 1
            return 0
        if self._failures:
            log.info("claiming jobs again")
        self._failures = 0
        if jobs:
            self.lag = max((now - job.due_at).total_seconds() for job in jobs)
        for job in jobs:
            self.running[job.id] = asyncio.create_task(self._execute(job))
        return len(jobs)

    def flow_probe(self) -> tuple[Mapping[tuple[str, str], int], Mapping[str, int] | None]:
        """What `/metrics` reports of flow control (`Metrics.flow`): the jobs it kept from
        being written in this process, and the due jobs waiting for their keys (as last
        read, at most a second ago while any wait). No query."""
        return SKIPPED, self.waiting

    def probe(self) -> tuple[dict[str, int], float | None]:
        """What `/metrics` reports of jobs (`Metrics.jobs`): those running in this process
        now, those it ended since it started (done, failed, retried: ended to run again),
        and how late the latest ones it claimed started, in seconds. No query."""
        return {"running": len(self.running) - len(self._ended), **self.ended}, self.lag

    async def end(self, end: JobEnd) -> None:
        """Write how a job ended (unless its run's commit did: see `finish`); counted only
        if it was still this claim's to end."""
        if await self.finisher.end(end):
            self._count(end.id, "retried" if end.status == "pending" else end.status)

    def _count(self, job_id: str, how: str) -> None:
        """A job of this process ended (`how`): no longer counted as running from now on."""
        self.ended[how] += 1
        self._ended.add(job_id)

    async def _pause(self, stop: asyncio.Event, full: bool) -> None:
        """Until `stop`, or a poll interval; and a free slot when every slot is taken, or
        else a wake-up (jobs were enqueued)."""
        if self._failures:  # the database is away: ask it less and less often
            timeout = min(self.poll * 2 ** min(self._failures, 16), MAX_BACKOFF_SECONDS)
        else:
            timeout = self.poll if full else await self._until_next_due()
        stopper = asyncio.ensure_future(stop.wait())
        helpers: list[asyncio.Future[Any]] = [stopper]
        if full:
            waiters: list[asyncio.Future[Any]] = [stopper, *self.running.values()]
        else:
            helpers.append(asyncio.ensure_future(self.storage.jobs.wait(timeout)))
            helpers.append(asyncio.ensure_future(self._freed.wait()))
            waiters = helpers
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for helper in helpers:
                helper.cancel()
            self._freed.clear()

    async def _until_next_due(self) -> float:
        """Seconds until the next pending job is due, at most a poll interval: a job due
        in 30 ms starts in about 30 ms, not at the next poll. (And, at most once a second,
        how many due jobs wait for their keys, for /metrics.)"""
        try:
            due = await self.storage.jobs.next_due(self.clock())
            if time.monotonic() - self._waiting_read >= WAITING_EVERY:
                self.waiting = await self.storage.jobs.flow_waiting(self.clock())
                self._waiting_read = time.monotonic()
        except GatewayError:
            return self.poll
        if due is None:
            return self.poll
        return min(self.poll, max((due - self.clock()).total_seconds(), MIN_WAIT))

    async def _renew_forever(self, stop: asyncio.Event) -> None:
        interval = max(self.lease.total_seconds() / 3, 0.05)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if self.running:
                try:
                    await self.storage.jobs.renew(self.worker, list(self.running),
                                                  self.clock() + self.lease)
                except GatewayError as exc:
                    log.warning("could not renew leases: %s", escape(exc.message))

    async def _drain(self) -> None:
        """Running jobs get the grace period; the rest are stopped and given back."""
        if not self.running:
            return
        tasks = dict(self.running)
        _, late = await asyncio.wait(tasks.values(), timeout=self.grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        unfinished = [id for id, task in tasks.items() if task in late]
        if unfinished:
            with contextlib.suppress(GatewayError):
                await self.storage.jobs.release(self.worker, unfinished)
            log.info("gave back %d running job(s) at shutdown", len(unfinished))

    async def _plan_recurring(self) -> None:
        """Write the next tick of each global recurring event, at most once a poll (each
        is also planned as soon as its last tick ends: see `execute`)."""
        if not self.registry.recurring or self._failures or (
                time.monotonic() - self._planned < self.poll):
            return
        self._planned = time.monotonic()
        try:
            await self.planner.plan(self.registry.recurring.values())
        except GatewayError as exc:
            log.warning("could not plan recurring events: %s", escape(exc.message))

    async def _execute(self, job: Job) -> None:
        try:
            await self.execute(job)
        except GatewayError as exc:
            log.warning("job %s: %s", job.id, escape(exc.message))
        finally:  # unless the job is a newer claim's of this worker (its lease had lapsed)
            if self.running.get(job.id) is asyncio.current_task():
                del self.running[job.id]
                self._ended.discard(job.id)
            if job.flow_key is not None:  # its end is written: its key has room again
                self._freed.set()

    async def execute(self, job: Job) -> None:
        """Run one claimed job and record how it ended; a recurring event's tick that was
        missed does not run (its `misfire` plans another), and one that ran is followed by
        its event's next."""
        event = self.registry.recurring.get(job.workflow) if job.source == "recurring" else None
        series = series_of(job)
        if series is not None and series != await self.storage.jobs.current_series(
                job.workflow, str(job.subject)):
            await self.end(JobRun(job).end(
                "cancelled", self.clock(), error="replaced: its record's series was replaced "
                "or stopped (set_recurring_event)"))
        elif event is not None and missed(event, job, self.clock()):
            instead = JobRun(job, await self.planner.instead(event, job))
            await self.end(instead.end(
                "cancelled", self.clock(), error="missed: the tick after it was due before it "
                f"started (misfire: {event.misfire})"))
        else:
            await self._run(job, event)
        if event is not None and job.subject is None:
            await self.planner.plan_event(event)

    async def _run(self, job: Job, event: RecurringEvent | None) -> None:
        try:
            workflow, raw, extra = await self.target(job)
        except JobError as exc:
            await self.end(JobRun(job).end("failed", self.clock(), error=str(exc)))
            return
        then = None if event is None else self.planner.following(event, job)  # record found
        run = JobRun(job, then, remark=changed_since(job, workflow))
        origin = Origin(job.source, run, int(job.data.get("depth", 0)), extra)
        result = await self.interpreter.run(workflow, raw, origin=origin,
                                            identity=await self.identity(job))
        await self.record(run, workflow, result)

    async def record(self, run: JobRun, workflow: Workflow, result: RunResult) -> None:
        """How a job's run ended, written with its `follow` (the next tick of its series),
        unless the run's commit wrote it."""
        error, job = result.error, run.job
        if isinstance(error, LeaseLostError):  # the job is a newer claim's, which ends it
            self.ended["lost"] += 1  # (a newer claim of this process's runs it still)
            log.warning("%s", escape(error.message))
            return
        if result.committed:  # its run ended it, in the run's own transaction (and `follow`)
            self._count(job.id, "done")
            return
        end = ending(run, workflow.retry, result, self.clock())
        await self.end(end)
        if end.status == "failed":
            log.warning("job %s (%s) failed after %d attempt(s): %s", job.id,
                        escape(job.workflow), job.attempt, escape(end.error or ""))

    async def target(self, job: Job) -> Target:
        """The workflow a job runs, its raw parameters and the names its templates see."""
        params = dict(job.data.get("params") or {})
        if job.source == "trigger":
            trigger = self.registry.triggers.get(job.workflow)
            if trigger is None:
                raise JobError(f"the database trigger '{job.workflow}' no longer exists")
            return trigger.run, params, names(job.data.get("before"), job.data.get("after"))
        if job.source == "recurring":
            return await self._recurring_target(job, params)
        if job.data.get("event"):
            workflow = self.registry.events.get(job.workflow)
            if workflow is None:
                raise JobError(f"the custom event '{job.workflow}' no longer exists")
        else:
            workflow = self.registry.workflows.get(job.workflow)
            if workflow is None:
                raise JobError(f"the API workflow '{job.workflow}' no longer exists")
        if job.data.get("ignore_privacy_rules") is True:  # the scheduling step said so
            workflow = replace(workflow, ignore_privacy_rules=True)
        return workflow, params, None

    async def _recurring_target(self, job: Job, params: dict[str, Any]) -> Target:
        event = self.registry.recurring.get(job.workflow)
        if event is None:
            raise JobError(f"the recurring event '{job.workflow}' no longer exists")
        extra: dict[str, Any] | None = None
        if event.type is not None and job.subject is not None:
            thing = await self.storage.records.get(event.type, job.subject)
            if thing is None:
                raise JobError(f"the {event.type} {job.subject} no longer exists")
            extra = {"thing": thing}
        if event.steps is not None:
            return event.steps, params, extra
        workflow = self.registry.workflows.get(event.workflow or "")
        if workflow is None:
            raise JobError(f"the API workflow '{event.workflow}' no longer exists")
        if extra is not None and any(p.name == "thing" for p in workflow.params):
            params["thing"] = job.subject
        if event.retry is not None:
            workflow = replace(workflow, retry=event.retry)
        return workflow, params, None

    async def identity(self, job: Job) -> Identity:
        """Who the run acts for: whoever scheduled it (a user as their current record)."""
        record = job.data.get("identity") or {}
        kind = record.get("kind")
        if kind == "admin":
            return ADMIN
        if kind == "user" and record.get("user_id"):
            user = await self.storage.records.get("user", record["user_id"])
            return Identity("user", record["user_id"], user=user)
        return ANONYMOUS
