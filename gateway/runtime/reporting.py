"""How a run is reported as it ends, whatever its outcome: to whoever observes runs (the
metrics), to the server log when it failed on the gateway's side, and to the run log, with
each step's status, duration and, when a step did not run or its error was swallowed, the
reason (a successful run only as often as `run_log.sample_success` says). Secrets are cut
out of all of it."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from gateway.core.errors import GatewayError, RunError, run_status
from gateway.core.logformat import log_run_failure
from gateway.core.redaction import redact, short_repr
from gateway.files.uploads import without_contents
from gateway.runtime.context import ANONYMOUS, Reply, RunContext
from gateway.runtime.model import Workflow

if TYPE_CHECKING:
    from gateway.storage import Storage

log = logging.getLogger("gateway.run")
Observe = Callable[[str, str, str, float], None]  # as a run ends: id, workflow, status, ms

_ANONYMOUS = ANONYMOUS.record  # how the run log keeps most identities: made once


class Reports:
    """Where the runs of one interpreter are reported: `hidden` holds the forms of the
    secrets cut out of what is kept, `sample` the share of successful runs the run log
    keeps."""

    def __init__(self, storage: Storage | None, hidden: frozenset[str], sample: float,
                 observe: Observe | None = None) -> None:
        self.storage = storage
        self.hidden = hidden
        self.sample = sample
        self.observe = observe

    def report(self, ctx: RunContext, workflow: Workflow, started: float,
               params: Mapping[str, Any], reply: Reply | None,
               error: GatewayError | None, hidden: frozenset[str] | None = None) -> None:
        """The run of `workflow` in `ctx`, begun at `started` (`time.perf_counter()`),
        ended with `reply` or `error`; `hidden` replaces the secrets to cut (a run's own
        adds the passwords it saw)."""
        hidden = self.hidden if hidden is None else hidden
        duration = round((time.perf_counter() - started) * 1000, 3)
        status = "success" if error is None else run_status(error)
        if self.observe is not None:
            self.observe(ctx.run_id, workflow.name, status, duration)
        if error is not None and (isinstance(error, RunError) or error.status >= 500):
            self.log_failure(ctx, workflow, error, hidden)
        if self.storage is None or (error is None and self.sample < 1.0 and not self.sampled()):
            return
        self.storage.runs.record_run({
            "id": ctx.run_id, "workflow": workflow.name, "source": ctx.source,
            "identity": _ANONYMOUS if ctx.identity is ANONYMOUS else ctx.identity.record,
            "status": status, "started_at": ctx.now,
            "duration_ms": duration,
            "params": redact({k: without_contents(v) for k, v in params.items()}
                             if workflow.file_params else params, hidden),
            "result": redact(reply.data if reply else None, hidden),
            "error": None if error is None else {
                "code": error.code, "message": redact(error.message, hidden),
                "location": getattr(error, "location", "")},
            "steps": redact(ctx.steps, hidden) if hidden else ctx.steps,  # cut by the run log
            **({} if ctx.job is None else {"job": ctx.job.job.id,
                                           "attempt": ctx.job.job.attempt}),
            **({} if ctx.job is None or not ctx.job.remark else {"remark": ctx.job.remark}),
            **({} if ctx.client is None else {"client": ctx.client}),
            **({} if ctx.trace is None else {"trace_id": ctx.trace[3:35]}),
            **({} if not ctx.flow else {"flow": redact(ctx.flow, hidden)}),
        })

    def log_failure(self, ctx: RunContext, workflow: Workflow, error: GatewayError,
                    hidden: frozenset[str] | None = None) -> None:
        where = getattr(error, "location", "") or workflow.location
        log_run_failure(log, ctx.run_id, workflow.name, where, error,
                        self.hidden if hidden is None else hidden)

    def sampled(self) -> bool:
        """Whether to record this successful run (`run_log.sample_success` of them)."""
        return self.sample >= 1.0 or random.random() < self.sample


def declared(workflow: Workflow, raw: Mapping[str, Any]) -> dict[str, Any]:
    """What a rejected call sent for the declared parameters, cut short: the run log keeps
    why a call was refused, not whatever a caller chose to send."""
    kept: dict[str, Any] = {}
    for param in workflow.params:
        if param.name in raw:
            text = short_repr(without_contents(raw[param.name]))
            kept[param.name] = text if len(text) <= 200 else text[:200] + "…"
    return kept
