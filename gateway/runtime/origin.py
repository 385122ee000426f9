"""Where a run comes from, handed to `Interpreter.run` as two typed values: what started
it (`Origin`: its source and, for a scheduled run, its job, how many scheduled runs led to
it and the names its templates see besides everyone's), and what the call that asked for
it says (`Call`: the HTTP request's facts, the caller's address, an idempotent run's hold
on its key).

A job's run carries the job as its worker claimed it (`JobRun`), typed, from the claim to
the run's commit and back to the worker; and however the job ends, its end is made here
(`JobRun.end`), with the claim it ends and the tick that follows it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.storage.contract import Job, JobEnd

# An idempotent run's hold on its key, checked in the run's transaction as it commits (what
# the run wrote is kept only while the run still holds its key; see `webhooks.guard`).
Fence = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class JobRun:
    """The job a run was started by, as its worker claimed it (its `claims`, the claim the
    run's commit is fenced by), and `follow`: the next tick of a per-record series, written
    with the job's end however the job ends (see `gateway.scheduler.enqueue`); templates
    never see it."""

    job: Job
    follow: Job | None = None
    # What the run log says of the job beside its id (a definition that changed since the
    # job was scheduled), or None.
    remark: str | None = None

    @property
    def shown(self) -> dict[str, Any]:
        """What the run's templates see of the job, under `run`: `run.job` (its id),
        `run.scheduled_at` (when it was due), `run.attempt` (1, 2, …) and `run.claim`."""
        job = self.job
        return {"job": job.id, "scheduled_at": job.due_at, "attempt": job.attempt,
                "claim": job.claims}

    def end(self, status: str, at: datetime, run_id: str | None = None,
            error: str | None = None, retry_at: datetime | None = None) -> JobEnd:
        """How the job ended (`done`, `failed`, `cancelled`, or `pending` again at
        `retry_at`): the end of this claim only, written with `follow`."""
        return JobEnd(self.job.id, status, at, run_id, error, retry_at,
                      claims=self.job.claims, then=self.follow)


@dataclass(frozen=True, slots=True)
class Origin:
    """What started a run: its `source` (`http`, `cli`, `schedule`, `recurring`,
    `trigger`), the job it runs for (a scheduled run's), how many scheduled runs led to it
    (`schedule_depth`, which bounds how deep they nest), and the names its templates see
    besides everyone's (`thing` for a per-record recurring event; `before` and `after` for
    a database trigger)."""

    source: str = "http"
    job: JobRun | None = None
    schedule_depth: int = 0
    names: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """What the call that asked for a run says: `request`, the HTTP facts its templates see
    as `request` (an API workflow that reads them); `client`, the caller's address (behind
    trusted proxies, the forwarded one); `fence`, an idempotent run's hold on its key."""

    request: Mapping[str, Any] | None = None
    client: str | None = None
    fence: Fence | None = None


HTTP = Origin()  # a run over HTTP: what most runs are
NO_CALL = Call()  # a run nobody called over HTTP (the CLI, a job, a test)
