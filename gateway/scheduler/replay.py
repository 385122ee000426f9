"""Replaying a failed or cancelled job, by hand (`gateway jobs retry`, the console's retry):
where its next run starts.

By default the retried job resumes: its next run restores the steps that earlier runs
checkpointed (see `gateway.runtime.checkpoints`) and runs the rest. From a step `N`, the
checkpoints of steps N and later are forgotten first, so that those steps run again (from
step 1: the whole workflow, as if it had never run).
"""

from __future__ import annotations

from datetime import datetime

from gateway.storage.contract import JobStore

REPLAYABLE = frozenset({"failed", "cancelled"})


async def replay(jobs: JobStore, job_id: str, at: datetime,
                 from_step: int | None = None) -> bool:
    """The job pending again, due `at`, resuming (or run again from step `from_step`);
    False when it is not failed or cancelled (then nothing is forgotten)."""
    if from_step is not None:
        if from_step < 1:
            raise ValueError("steps are numbered from 1")
        found = await jobs.get_job(job_id)
        if found is None or found.status not in REPLAYABLE:
            return False
        await jobs.forget_checkpoints(job_id, from_step)
    return await jobs.retry(job_id, at)
