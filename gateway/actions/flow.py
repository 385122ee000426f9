"""Actions that shape a run: `set`, `return_data`, `terminate`, `fail`, `log`, `trigger_event`."""

from __future__ import annotations

import logging
from typing import Any

from gateway.actions.context import Reply, RunContext
from gateway.errors import RunError, StepFailedError
from gateway.model import Execute

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def _status(value: Any, default: int, low: int = 100) -> int:
    if value is None:
        return default
    try:
        status = int(value)
    except (TypeError, ValueError) as exc:
        raise RunError(f"status must be an integer, not {value!r}") from exc
    if not low <= status <= 599 or isinstance(value, bool):
        raise RunError(f"status {status} is outside {low}-599")
    return status


async def set_values(ctx: RunContext, args: dict[str, Any]) -> Any:
    return args.get("values", {})


async def return_data(ctx: RunContext, args: dict[str, Any]) -> Reply:
    headers = {str(k): str(v) for k, v in (args.get("headers") or {}).items()}
    status = _status(args.get("status"), 200)
    if "text" in args:
        text = args["text"]
        return Reply(text="" if text is None else str(text), status=status, headers=headers,
                     content_type=args.get("content_type") or "text/plain; charset=utf-8")
    return Reply(data=args.get("data", {}), status=status, headers=headers,
                 content_type=args.get("content_type"))


async def terminate(ctx: RunContext, args: dict[str, Any]) -> Reply:
    return Reply(data={})


async def fail(ctx: RunContext, args: dict[str, Any]) -> Any:
    raise StepFailedError(str(args.get("message", "The workflow failed")),
                          status=_status(args.get("status"), 400, low=400),
                          code=str(args.get("code") or "FAILED"))


async def log(ctx: RunContext, args: dict[str, Any]) -> Any:
    level = _LEVELS.get(str(args.get("level", "info")), logging.INFO)
    ctx.log.log(level, "%s [run %s] %s", ctx.workflow, ctx.run_id, args.get("message"))
    return None


async def trigger_event(ctx: RunContext, args: dict[str, Any]) -> Any:
    return await ctx.call_event(ctx, str(args["event"]), args.get("params") or {})


ACTIONS: dict[str, Execute] = {
    "set": set_values, "return_data": return_data, "terminate": terminate, "fail": fail,
    "log": log, "trigger_event": trigger_event,
}
