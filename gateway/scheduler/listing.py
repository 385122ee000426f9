"""What a list of jobs shows of each (`gateway jobs list`, the console's jobs page): the
label of what it runs, who scheduled it, its parameters, cut short, its flow control keys,
and why a pending job past its due time waits (`waits_text`: its concurrency key is full,
its throttle's period is used up)."""

from __future__ import annotations

from datetime import datetime

from gateway.core.encoding import dumps_lenient
from gateway.core.redaction import redact
from gateway.runtime.model import Registry
from gateway.storage.contract import Job, JobStore, KeyUse

PARAMS_SHOWN = 120  # characters of a job's parameters in a list (the job's page has all)


def label_of(registry: Registry, job: Job) -> str:
    """The label of the API workflow or custom event a scheduled job runs ('' if none)."""
    if job.source != "schedule":  # recurring events and triggers have no label
        return ""
    found = (registry.events if job.data.get("event") else registry.workflows).get(job.workflow)
    return "" if found is None else found.label


def scheduled_by(job: Job) -> str:
    """Who scheduled the job, as its run will act for: `user <id>`, `admin` or
    `anonymous`."""
    identity = job.data.get("identity")
    if not isinstance(identity, dict):
        return ""
    if identity.get("kind") == "user" and identity.get("user_id"):
        return f"user {identity['user_id']}"
    return str(identity.get("kind") or "")


def params_text(job: Job, hidden: frozenset[str] = frozenset(),
                most: int = PARAMS_SHOWN) -> str:
    """A job's parameters as JSON, secrets cut out, at most `most` characters (then `…`)."""
    params = job.data.get("params") or {}
    if not params:
        return ""
    text = dumps_lenient(redact(params, hidden) if hidden else params)
    return text if len(text) <= most else text[:most - 1] + "…"


def _shown(job: Job, key: str, most: int) -> str:
    key = key.partition(":")[2]  # without the name of what it keys (no name holds a ':')
    return key if len(key) <= most else key[:most - 1] + "…"


def _period(ms: int) -> str:
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def key_text(job: Job, most: int = PARAMS_SHOWN) -> str:
    """A job's flow control keys as its workflow's templates made them (without the
    workflow's name the store prefixes them with), each cut short: `concurrency <key>
    (limit N)`, `throttle <key> (N per P)`, `debounce <key>`, `singleton <key>`; '' if it
    has none."""
    parts = []
    if job.flow_key is not None and job.flow_limit is not None:
        parts.append(f"concurrency {_shown(job, job.flow_key, most)} (limit {job.flow_limit})")
    if job.throttle_key is not None:
        parts.append(f"throttle {_shown(job, job.throttle_key, most)} "
                     f"({job.throttle_limit} per {_period(job.throttle_ms or 0)})")
    if job.debounce_key is not None:
        parts.append(f"debounce {_shown(job, job.debounce_key, most)}")
    if job.single_key is not None:
        parts.append(f"singleton {_shown(job, job.single_key, most)}")
    return "; ".join(parts)


async def key_use(jobs: JobStore, listed: list[Job], now: datetime) -> KeyUse:
    """How much of the keys the pending jobs of `listed` wait for is used now, and which
    of them a throttle made due later."""
    waiting = [job for job in listed if job.status == "pending" and job.flow_key is not None]
    if not waiting:
        return {}, {}, frozenset()
    return await jobs.key_use(
        now, [j.flow_key for j in waiting if j.flow_limit is not None
              and j.flow_key is not None and j.due_at <= now],
        [(j.throttle_key, j.throttle_ms or 0) for j in waiting if j.throttle_key is not None],
        [j.id for j in waiting if j.throttle_key is not None and j.due_at > now])


def waits_text(job: Job, use: KeyUse, now: datetime) -> str:
    """Why a pending job waits: past its due time, for its concurrency key (as many of
    its jobs running as its limit allows); for its throttle (as many started within the
    period as it allows: a claim made it due at its turn); before its due time,
    debounced (a later scheduling pushes it back). '' when it does not wait, or waits
    only for its time or a worker."""
    if job.status != "pending":
        return ""
    running, started, deferred = use
    reasons = []
    if job.due_at <= now and job.flow_key is not None and job.flow_limit is not None:
        count = running.get(job.flow_key, 0)
        if count >= job.flow_limit:
            reasons.append(f"concurrency: {count} of {job.flow_limit} running")
    if job.throttle_key is not None and job.throttle_limit is not None and (
            job.due_at <= now or job.id in deferred):
        count = started.get(job.throttle_key, 0)
        if count >= job.throttle_limit:
            reasons.append(f"throttle: {count} of {job.throttle_limit} started in the last "
                           f"{_period(job.throttle_ms or 0)}")
    if not reasons and job.due_at > now and job.debounce_key is not None and job.attempt == 0:
        reasons.append("debounced: runs once no job of its key is scheduled for its period")
    return "; ".join(reasons)
