"""How a job ends, and the one place its end is written.

Every end is a `JobEnd` made by the job's `JobRun` (`JobRun.end`: the claim it ends and
the tick that follows it, always), and written here, one of two ways: in the run's own
transaction, by its commit, when the run wrote (`settle`: the job is `done` with the
run's writes, or neither is kept); otherwise by the worker once the run ended, or without
a run (a tick replaced or missed, a job whose workflow is gone), in batches (`Finisher`):
every job a worker ends while the previous batch is being written goes into the next one,
so that under load a worker spends one statement (and one commit) on many jobs' ends
rather than one each. What a run's outcome makes of its job (done, retried later, failed)
is decided in `ending`.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from gateway.core.errors import NotRunError, StepFailedError
from gateway.runtime.interpreter import RunResult
from gateway.runtime.model import Retry
from gateway.runtime.origin import JobRun
from gateway.storage.common.batching import Batcher
from gateway.storage.contract import JobEnd, JobStore

BATCH = 500


def backoff(retry: Retry, attempt: int) -> timedelta:
    """Full jitter: a random wait up to `backoff` x 2^(attempt-1), at most `max_backoff`."""
    ceiling: timedelta = min(retry.max_backoff, retry.backoff * (2 ** min(attempt - 1, 30)))
    return ceiling * random.random()


def ending(run: JobRun, retry: Retry, result: RunResult, now: datetime) -> JobEnd:
    """How a job ends once its run ended without ending it: `done` (the run succeeded, or
    its condition was not met), `pending` again after a backoff (a failure worth another
    attempt, while its `retry` allows one), or `failed` with the run's error."""
    error = result.error
    if error is None or isinstance(error, NotRunError):
        return run.end("done", now, result.run_id)
    message = f"{error.code}: {error.message}"
    attempt = run.job.attempt
    retryable = error.status >= 500 or isinstance(error, StepFailedError)
    if retryable and attempt < retry.max_attempts:
        return run.end("pending", now, result.run_id, message, now + backoff(retry, attempt))
    return run.end("failed", now, result.run_id, message)


async def settle(jobs: JobStore, end: JobEnd) -> None:
    """`end` written in its run's own transaction (called in it, by the run's commit), with
    its `then`: fenced by the claim it ends, so that once a newer claim took the job,
    `LeaseLostError` is raised and nothing of the transaction is kept."""
    assert end.claims is not None and end.run_id is not None, "a settled end names its claim"
    await jobs.settle(end.id, end.claims, end.at, end.run_id)
    if end.then is not None:
        await jobs.enqueue([end.then])


class Finisher:
    """Writes `JobEnd`s for one worker, batched (a `Batcher` whose rounds begin a turn of
    the event loop later: the jobs that end in the same turn join in)."""

    def __init__(self, jobs: JobStore, worker: str) -> None:
        self.jobs = jobs
        self.worker = worker
        self._ends: Batcher[JobEnd, bool] = Batcher(self._finish, most=BATCH, yield_first=True)

    async def end(self, end: JobEnd) -> bool:
        """Write how a job ended; False when it was no longer this worker's (its lease had
        expired and another worker took it)."""
        return await self._ends(end)

    async def _finish(self, ends: list[JobEnd]) -> list[bool]:
        done = await self.jobs.finish_many(self.worker, ends)
        return [end.id in done for end in ends]
