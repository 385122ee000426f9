"""Resumable runs: the steps of a job's run whose effect is outside the database.

A job that fails at step 4 is run again (an automatic retry, a lease that expired under a
killed worker, `gateway jobs retry`). What its run wrote to the database rolled back with
it, so running those steps again is right; but an e-mail sent or a payment made at step 2
cannot be rolled back, and must not happen twice. So, in a job's run, a step of an
`outbound` action that succeeds is checkpointed at once (`JobStore.checkpoint`, committed
on its own, outside the run's transaction): its place, its action and id, the run, and its
result as JSON. A later run of the same job reads the job's checkpoints once, as it
starts (only when the job was claimed before: a first run pays no query), and restores
the result of every step whose checkpoint still matches it rather than running it again.

A step's place is its number in its workflow (`3`), or its path through the custom events
called inline (`3.2`: the second step of the event that step 3 called), so that the steps
of an event are checkpointed too. A checkpoint whose action or step id no longer match the
step at its place (the workflow changed between the attempts) is ignored, and said.

What is left: an e-mail the SMTP server took just before the process died, before its
checkpoint committed, is sent again by the next attempt (an `http_request` can close that
window with an `idempotency_key`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from gateway.core.encoding import encode
from gateway.core.errors import StorageError
from gateway.storage.contract import Checkpoint

if TYPE_CHECKING:
    from gateway.runtime.context import RunContext
    from gateway.runtime.model import Step

# The largest result kept (as JSON): a larger one is recorded as not kept, and its step
# runs again on a retry (which the run log says). An outbound call's answer may be up to
# `http.max_response_bytes`; a checkpoint is a row read back whole by every retry.
CHECKPOINT_SECONDS = 5.0  # the longest a step waits for its checkpoint to be taken
MAX_RESULT_BYTES = 1_048_576


async def load(ctx: RunContext) -> None:
    """Start a job's run with what it can restore (`ctx.restore`): nothing when this is
    the job's first claim, else its checkpoints by place, in one query."""
    job = ctx.job
    if job is None or ctx.storage is None:
        return
    if job.job.claims <= 1:
        ctx.restore = {}
        return
    found = await ctx.storage.jobs.checkpoints(job.job.id)
    ctx.restore = {c.place: c for c in found}


def restored(found: dict[str, Checkpoint], place: str, step: Step,
             entry: dict[str, Any]) -> Checkpoint | None:
    """The checkpoint that stands for `step` at `place`, its run-log `entry` marked as
    restored; or None (the step runs), with why in `entry` when there was one."""
    done = found.get(place)
    if done is None:
        return None
    if done.action != step.action.name or done.step_id != (step.id or ""):
        entry["checkpoint"] = (f"ignored: run {done.run_id} checkpointed another step here "
                               f"({done.action} {done.step_id or '(no id)'}); the "
                               "definition changed, so this step runs")
        return None
    if not done.kept:
        entry["checkpoint"] = (f"run {done.run_id} did this step but its result was too "
                               "large to checkpoint: it runs again")
        return None
    entry.update(status="skipped", reason=f"done by an earlier attempt (run {done.run_id})",
                 restored=True)
    return done


async def save(ctx: RunContext, step: Step, result: Any) -> None:
    """Checkpoint `step`, which succeeded with `result`, at the place it runs at. A result
    over `MAX_RESULT_BYTES` (or one JSON cannot hold) is recorded as not kept; a checkpoint
    the database refuses is said in the run log. Either way the run goes on: the step was
    done, and a retry will do it again."""
    job, storage = ctx.job, ctx.storage
    if job is None or storage is None:
        return
    try:
        kept = len(encode(result)) <= MAX_RESULT_BYTES
        why = f"its result is over {MAX_RESULT_BYTES} bytes"
    except (TypeError, ValueError):
        kept, why = False, "its result cannot be written as JSON"
    if not kept:
        ctx.remark(checkpoint=f"not checkpointed: {why}; a retry runs this step again")
    done = Checkpoint(ctx.place, step.action.name, step.id or "", ctx.run_id, ctx.clock(),
                      result if kept else None, kept)
    try:
        # Bounded: on PostgreSQL it takes a connection of its own, which a pool that the
        # runs holding transactions exhaust would make it wait for until the pool's timeout.
        async with asyncio.timeout(CHECKPOINT_SECONDS):
            await storage.jobs.checkpoint(job.job.id, done)
    except StorageError as exc:
        ctx.remark(checkpoint=f"not checkpointed: {exc.message}; a retry runs this step "
                              "again")
    except TimeoutError:
        ctx.remark(checkpoint=f"not checkpointed: the database did not take it within "
                              f"{CHECKPOINT_SECONDS:g} s; a retry runs this step again")
