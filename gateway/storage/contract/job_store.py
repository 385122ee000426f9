"""The jobs role of the storage contract: a job, how one ended, and `JobStore` (re-exported
by `gateway.storage.contract`, where the other roles are)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from gateway.core.errors import LeaseLostError

# What `JobStore.key_use` says: running jobs by concurrency key, starts by throttle key, and
# which of the jobs asked of a throttle made due later, at their turns.
KeyUse = tuple[dict[str, int], dict[str, int], frozenset[str]]
# A run's or a job's place in its list, newest first: (`started_at` or `due_at`, `id`).
Position = tuple[datetime, str]


@dataclass(frozen=True, slots=True)
class Job:
    """One job: a run of `workflow` (an API workflow, a recurring event or a database
    trigger, as `source` says: `schedule`, `recurring` or `trigger`) due at `due_at`.

    `data` holds what the run is given: `params`, `identity` (who it acts for), `depth`
    (how many scheduled runs led to it) and, per source, `thing` (a per-record event),
    `frequency`, `before` and `after` (a trigger). `attempt` counts the claims so far."""

    id: str
    workflow: str
    source: str
    due_at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    status: str = "pending"
    attempt: int = 0
    unique_key: str | None = None
    subject: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    run_id: str | None = None
    error: str | None = None
    lease_until: datetime | None = None
    worker: str | None = None
    # Every claim of the job so far, never reset (`attempt` is, by a retry; a release takes
    # a claim back): which claim a run was started by (see `JobStore.settle`).
    claims: int = 0
    # Its concurrency key (its workflow's name and its rendered `concurrency.key`) and the
    # most jobs of that key that may run at once (`flow_limit`); None: no key.
    flow_key: str | None = None
    flow_limit: int | None = None
    # Its throttle (at most `throttle_limit` jobs of `throttle_key` start per `throttle_ms`
    # milliseconds), its debounce key and its singleton key (see `gateway.scheduler.enqueue`).
    # A job under any flow control has a `flow_key`: its concurrency key, or else its
    # throttle key with no `flow_limit`.
    throttle_key: str | None = None
    throttle_limit: int | None = None
    throttle_ms: int | None = None
    debounce_key: str | None = None
    single_key: str | None = None


JOB_STATUSES = ("pending", "running", "done", "failed", "cancelled")


def series_of(job: Job) -> str | None:
    """The series a tick of a per-record recurring event belongs to (the one
    `set_recurring_event` started, named in its `data`); None for any other job."""
    if job.source != "recurring" or job.subject is None:
        return None
    series = job.data.get("series")
    return None if series is None else str(series)


@dataclass(frozen=True, slots=True)
class PendingBound:
    """The most jobs that may be pending at once: in all (`most`), and of any one workflow
    (`per_workflow`); None is no bound."""

    most: int | None = None
    per_workflow: int | None = None


def lease_lost(id: str) -> LeaseLostError:
    """What `JobStore.settle` raises for a claim that is no longer the job's."""
    return LeaseLostError(f"job {id}: its lease expired while this run ran and a newer claim "
                          "took the job; this run's changes were rolled back")


@dataclass(frozen=True, slots=True)
class JobEnd:
    """How one claimed job ended (what `JobStore.finish` is given)."""

    id: str
    status: str
    at: datetime
    run_id: str | None
    error: str | None = None
    retry_at: datetime | None = None
    # The claim it ends (the job's `claims` then): a worker's late end of a claim that
    # lapsed never ends the newer claim the same worker made.
    claims: int | None = None
    # A job written with the end, in its transaction, if the end is written (as `enqueue`
    # writes one, never bounded): the next tick of a per-record series, which no failure
    # between the two can leave unwritten once its tick ended.
    then: Job | None = None


@dataclass(frozen=True, slots=True)
class CallKeys:
    """The keys an HTTP call to a workflow with `concurrency` or `throttle` is admitted
    by, as a job of it would carry them (see `Job`)."""

    workflow: str
    flow_key: str | None = None
    flow_limit: int | None = None
    throttle_key: str | None = None
    throttle_limit: int | None = None
    throttle_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A step of a job's run whose effect is outside the database (an outbound call, an
    e-mail), done: what a retried run of the job restores instead of doing it again.

    `place` is the step's number in its workflow (`"3"`), or its path through the custom
    events called inline (`"3.2"`); `action` and `step_id` (`""`: none) tell whether the
    step is still the one that was done; `kept` is False for a result too large to keep
    (`result` None), whose step runs again."""

    place: str
    action: str
    step_id: str
    run_id: str
    at: datetime
    result: Any = None
    kept: bool = True


class JobStore(Protocol):
    """Jobs, claimed by workers with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL, one
    claiming statement in the writer on SQLite). A job whose lease expires is claimed again:
    at-least-once, except that a run which wrote records commits only with its job's end
    (`settle`), so that its writes happen once."""

    # All in one transaction; a job whose `unique_key` exists already is left out, and so
    # is a tick of a per-record series (`series_of`) that is not its record's current one
    # (`set_series`), and so is a job whose `single_key` a job waiting or running holds; a
    # job with a `debounce_key` that a job waiting unstarted holds is written over that job
    # (its params, due time and keys) instead. Then the workers are woken. Returns the ids
    # written (never one written over). With a `bound`,
    # `TooManyJobsError` is raised and nothing written when the jobs would leave more
    # pending than it allows (in all, or of a workflow they add to); checked in the
    # transaction, without counting jobs.
    async def enqueue(self, jobs: Sequence[Job], bound: PendingBound | None = None) -> list[str]:
        ...
    # Pending jobs cancelled (by id); a running job is not stopped. How many were.
    async def cancel(self, ids: Sequence[str], at: datetime) -> int: ...
    # The pending scheduled jobs (source `schedule`: not recurring ticks, not trigger runs)
    # of one workflow or custom event cancelled; how many were.
    async def cancel_workflow(self, workflow: str, at: datetime) -> int: ...
    # The series one per-record recurring event runs for one record from now on (None: no
    # series), and the pending ticks of the one before cancelled; how many were. A tick of
    # it running now is followed by no other: the ticks `enqueue` writes are its new one's.
    async def set_series(self, workflow: str, subject: str, series: str | None,
                         at: datetime) -> int: ...
    # The series a per-record recurring event runs for a record now (None: none). A worker
    # asks it of a tick it claimed: a tick written while its series was being replaced (no
    # lock orders the two, so that no run waits on another) is cancelled, not run.
    async def current_series(self, workflow: str, subject: str) -> str | None: ...
    # Up to `limit` due jobs (and jobs whose lease expired), now `running` for `worker`
    # until `lease_until`, their `attempt` counted; never a paused workflow's, and a job with
    # a `flow_key` only while fewer than its `flow_limit` jobs of that key are running (on
    # every instance: keyed claims are serialized), and one with a `throttle_key` only while
    # fewer than its `throttle_limit` of that key started in the last `throttle_ms`.
    async def claim(self, worker: str, now: datetime, lease_until: datetime,
                    limit: int) -> list[Job]: ...
    async def renew(self, worker: str, ids: Sequence[str], lease_until: datetime) -> None: ...
    # A claimed job ends: `done`, `failed` (with its error), or `pending` again at `retry_at`
    # (its error kept). False when the job is no longer this worker's (its lease expired
    # and another worker took it).
    async def finish(self, id: str, worker: str, status: str, at: datetime, run_id: str | None,
                     error: str | None = None, retry_at: datetime | None = None) -> bool: ...
    # Many `finish`es in one statement (the jobs this worker ended in the same moment), and
    # the `then` of each that was written, in one transaction; the ids that were still this
    # worker's (and, where an end names its claim, that claim).
    async def finish_many(self, worker: str, ends: Sequence[JobEnd]) -> set[str]: ...
    # A job's run that wrote ends the job `done` in the run's own transaction (called inside
    # it), so that its writes and the job's end commit together, as long as the job is still
    # the claim that the run was started by (the job's `claims` then). Once its lease
    # expired and a newer claim took it, `LeaseLostError` is raised (now, or when the
    # transaction commits) and nothing of the transaction is kept: the newer claim runs it.
    async def settle(self, id: str, claims: int, at: datetime, run_id: str) -> None: ...
    # Claimed jobs given back unstarted (a worker stopping): pending again, the claim uncounted.
    async def release(self, worker: str, ids: Sequence[str]) -> int: ...
    async def get_job(self, id: str) -> Job | None: ...
    async def list_jobs(self, status: str | None = None, workflow: str | None = None,
                        limit: int = 50) -> list[Job]: ...
    # `list_jobs`, one page of it: the jobs after `before` (latest due first).
    async def page_jobs(self, status: str | None = None, workflow: str | None = None,
                        limit: int = 50, *, before: Position | None = None) -> list[Job]: ...
    # A failed or cancelled job pending again, due `at`, its attempts counted anew, and
    # (`from_step`) the checkpoints of steps `from_step` and later forgotten with it, in one
    # transaction. False, and nothing done, when it is not failed or cancelled, or when it
    # would be a second job waiting with its debounce key, or waiting or running with its
    # singleton key.
    async def retry(self, id: str, at: datetime, from_step: int | None = None) -> bool: ...
    # The newest job of a recurring event (by due time), whatever its status; None if none.
    async def last_tick(self, workflow: str) -> Job | None: ...
    # Up to `limit` pending ticks of per-record recurring events after `since` (due time,
    # then id), soonest first.
    async def series_ticks(self, since: Position, limit: int) -> list[Job]: ...
    # `workflow` None pauses or resumes everything (stored as '*').
    async def pause(self, workflow: str | None, at: datetime) -> None: ...
    async def resume(self, workflow: str | None) -> None: ...
    async def paused(self) -> list[str]: ...
    # When the next pending job (of a workflow not paused) is due; None when none is. With
    # `now`, keyed jobs due by then are left out: they wait for their key, not their time.
    async def next_due(self, now: datetime | None = None) -> datetime | None: ...
    # What due jobs under flow control wait for, now: how many jobs of each concurrency key
    # in `flow_keys` run, and how many of each throttle key in `throttles` (key, period in
    # milliseconds) started within its period, and which jobs of `deferred` (ids) a throttle
    # made due later.
    async def key_use(self, now: datetime, flow_keys: Sequence[str],
                      throttles: Sequence[tuple[str, int]],
                      deferred: Sequence[str] = ()) -> KeyUse: ...
    # Jobs under flow control waiting for their keys at `now`, by workflow: those due, and
    # those a throttle made due later, at their turns.
    async def flow_waiting(self, now: datetime) -> dict[str, int]: ...
    # One HTTP call admitted under `keys` at `now` (by id), on every instance: while its
    # concurrency key has room and its throttle's period too (the jobs of the keys counted
    # with the calls), it is written as running until `until` at the latest, and None is
    # returned; otherwise nothing is written, and the seconds until room may open are (a
    # throttle's, exactly; a concurrency key's, a guess). Serialized with keyed claims.
    async def admit_call(self, id: str, keys: CallKeys, now: datetime,
                         until: datetime) -> float | None: ...
    # An admitted call ended: it holds its concurrency key no longer (the workers are
    # woken) and keeps its start while its throttle's period lasts.
    async def end_call(self, id: str, keys: CallKeys, now: datetime) -> None: ...
    # A step's checkpoint written (replacing the job's checkpoint at its place) and
    # committed on its own, never as part of the calling task's transaction, which a failed
    # run rolls back. On SQLite, while that transaction holds the writer, it is queued and
    # commits as soon as the transaction ends, committed or rolled back.
    async def checkpoint(self, job_id: str, checkpoint: Checkpoint) -> None: ...
    # A job's checkpoints, in one query (what a claim after the first restores).
    async def checkpoints(self, job_id: str) -> list[Checkpoint]: ...
    # The checkpoints of steps `from_step` (1-based, of the workflow: nested places go with
    # their step) and later forgotten, so that a retry runs them again; how many were.
    async def forget_checkpoints(self, job_id: str, from_step: int) -> int: ...
    # Checkpoints written before `before`, and those of jobs done or gone, deleted.
    async def purge_checkpoints(self, before: datetime) -> int: ...
    # Wait until jobs were enqueued (on this instance, or any on PostgreSQL) or `timeout`.
    async def wait(self, timeout: float) -> None: ...
