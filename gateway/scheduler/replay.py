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

MAX_STEP = 10_000  # the most steps `--from-step` names (a workflow has far fewer)


async def replay(jobs: JobStore, job_id: str, at: datetime,
                 from_step: int | None = None) -> bool:
    """The job pending again, due `at`, resuming (or run again from step `from_step`);
    False when it is not failed or cancelled, or when its flow control keys are taken
    (`JobStore.retry`): then nothing is forgotten."""
    if from_step is not None and not 1 <= from_step <= MAX_STEP:
        raise ValueError(f"steps are numbered from 1 to at most {MAX_STEP}")
    return await jobs.retry(job_id, at, from_step)
