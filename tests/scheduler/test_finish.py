"""How a job ends once its run ended (`gateway.scheduler.finish.ending`): every end is made
by the job's `JobRun`, so that it names the claim it ends and carries the tick that follows
the job, however the run went."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.core.errors import (
    GatewayError,
    InvalidDataError,
    NotRunError,
    StepFailedError,
    UpstreamError,
)
from gateway.runtime.interpreter import RunResult
from gateway.runtime.model import Retry
from gateway.runtime.origin import JobRun
from gateway.scheduler.finish import ending
from gateway.storage import Job

T0 = datetime(2030, 1, 1, tzinfo=UTC)
RETRY = Retry(max_attempts=3, backoff=timedelta(seconds=10), max_backoff=timedelta(minutes=1))


def run_of(attempt: int) -> JobRun:
    job = Job("j1", "w", "recurring", T0, attempt=attempt, claims=attempt + 2, subject="s")
    return JobRun(job, Job("j2", "w", "recurring", T0 + timedelta(days=1), subject="s"))


@pytest.mark.parametrize(("error", "attempt", "status"), [
    (None, 1, "done"),
    (NotRunError("The condition is not met", 400), 1, "done"),
    (UpstreamError("answered 503"), 1, "pending"),
    (StepFailedError("try later"), 2, "pending"),
    (UpstreamError("answered 503"), 3, "failed"),  # its last attempt
    (InvalidDataError("no such lead"), 1, "failed"),  # the caller's error: never retried
])
def test_a_job_s_end_names_its_claim_and_carries_its_follow(
        error: GatewayError | None, attempt: int, status: str) -> None:
    run = run_of(attempt)
    end = ending(run, RETRY, RunResult("r1", error=error), T0)
    assert (end.id, end.status, end.at, end.run_id) == ("j1", status, T0, "r1")
    assert end.claims == attempt + 2 and end.then is run.follow
    if status == "pending":
        assert end.retry_at is not None and T0 <= end.retry_at <= T0 + RETRY.max_backoff
    else:
        assert end.retry_at is None
    assert end.error == (None if status == "done" else f"{error.code}: {error.message}")


def test_templates_see_the_job_but_never_its_follow() -> None:
    shown = run_of(1).shown
    assert shown == {"job": "j1", "scheduled_at": T0, "attempt": 1, "claim": 3}
