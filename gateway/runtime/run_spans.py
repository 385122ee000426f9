"""What a run's spans say (see `gateway.tracing`): the run's own, opened as it starts and
closed as it ends; what a step's span says of why it was skipped; what a span shows of a
parameter declared `trace: true`; how a span names the database. Never an error's message,
which may quote a caller's values: that stays in the run log."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.core.errors import GatewayError, run_status
from gateway.runtime.context import RunContext
from gateway.runtime.model import Workflow
from gateway.runtime.origin import Origin
from gateway.runtime.param import Param

if TYPE_CHECKING:
    from gateway.storage import Storage
    from gateway.tracing.otel import Opened, Tracing

# What a step span says of why a step did not run or went on: the run log's reason when it
# is one of the gateway's own words, never a message that may quote a caller's values.
_IGNORED = "error ignored (on_error: continue)"


def open_run(tracing: Tracing, ctx: RunContext, origin: Origin | None) -> Opened:
    """The span of the run of `ctx`, made current; its `traceparent` kept in `ctx`. A job's
    run begins a trace of its own, linked to the run that scheduled the job."""
    job = origin.job if origin is not None else None
    opened = tracing.run(ctx.workflow, {
        "gateway.workflow": ctx.workflow, "gateway.run.id": ctx.run_id,
        "gateway.run.source": ctx.source,
        **({} if job is None else {"gateway.job.id": job.job.id,
                                   "gateway.job.attempt": job.job.attempt}),
    }, job=job is not None, link=None if job is None else job.job.data.get("trace"))
    ctx.trace = opened.traceparent()
    return opened


def close_run(opened: Opened, workflow: Workflow, params: Mapping[str, Any],
              error: GatewayError | None, hidden: frozenset[str]) -> None:
    """The run's span ended as the run did: its status, its error's code, the parameters
    declared `trace: true`."""
    status = "success" if error is None else run_status(error)
    values: dict[str, Any] = {"gateway.run.status": status}
    if error is not None:
        values["error.type"] = error.code
    for param in workflow.params:
        if param.traced and param.name in params:
            values[f"gateway.param.{param.name}"] = traced_value(param, params[param.name])
    opened.close(values, hidden=hidden,
                 error=error.code if error is not None and status == "failed" else None)


def step_reason(entry: Mapping[str, Any]) -> str | None:
    reason = entry.get("reason")
    if not isinstance(reason, str) or entry.get("status") != "skipped":
        return None
    return _IGNORED if reason.startswith(_IGNORED) else reason


def traced_value(param: Param, value: Any) -> Any:
    """What a span shows of a parameter declared `trace: true`: a record by its id (a list
    of them by theirs), a file by nothing, anything else as it is."""
    if param.is_file:
        return None
    if param.is_record:
        if isinstance(value, list):
            return [item.get("_id") if isinstance(item, Mapping) else item for item in value]
        return value.get("_id") if isinstance(value, Mapping) else value
    return value


def database_span(storage: Storage | None, operation: str) -> dict[str, Any]:
    """A database span's attributes: the backend, the operation; never a value."""
    return {"db.system.name": storage.system if storage is not None else None,
            "db.operation.name": operation}
