"""Where a run comes from: the job a scheduled run was started by (`JobRun`).

A job's run carries the job as its worker claimed it, typed, from the claim to the run's
commit and back to the worker; and however the job ends, its end is made here
(`JobRun.end`), with the claim it ends and the tick that follows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.storage.contract import Job, JobEnd


@dataclass(frozen=True, slots=True)
class JobRun:
    """The job a run was started by, as its worker claimed it (its `claims`, the claim the
    run's commit is fenced by), and `follow`: the next tick of a per-record series, written
    with the job's end however the job ends (see `gateway.scheduler.enqueue`); templates
    never see it."""

    job: Job
    follow: Job | None = None

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
