"""What a list of jobs shows of each (`gateway jobs list`, the console's jobs page): the
label of what it runs, who scheduled it, its parameters, cut short, and its concurrency key
(what a pending job past its due time waits for)."""

from __future__ import annotations

from gateway.core.encoding import dumps_lenient
from gateway.core.redaction import redact
from gateway.runtime.model import Registry
from gateway.storage.contract import Job

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


def key_text(job: Job, most: int = PARAMS_SHOWN) -> str:
    """A job's concurrency key as its workflow's template made it (without the workflow's
    name the store prefixes it with) and its limit, cut short; '' if it has none."""
    if job.flow_key is None:
        return ""
    key = job.flow_key.removeprefix(f"{job.workflow}:")
    key = key if len(key) <= most else key[:most - 1] + "…"
    return f"{key} (limit {job.flow_limit})"
