"""Actions that shape a run: `set`, `return_data`, `terminate`, `fail`, `log`, `trigger_event`."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gateway.config.source import DocumentKind
from gateway.core import pointer as ptr
from gateway.core.errors import RunError, StepFailedError, did_you_mean, shown
from gateway.runtime.action_spec import Action, StepCheck, check_call_params
from gateway.runtime.context import Reply, RunContext
from gateway.runtime.privacy import EXEMPT

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
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


# Headers the gateway writes itself: the body's length and framing, and the connection's. A
# second Content-Length would let the caller's HTTP stack and a proxy read the stream
# differently; the media type is `content_type`.
GATEWAY_HEADERS = {"content-length": "the gateway sets it from the body",
                   "transfer-encoding": "the gateway frames the body itself",
                   "connection": "the server manages the connection",
                   "content-type": "use content_type"}


def _headers(value: Any) -> dict[str, str]:
    """Response headers as HTTP can carry them: a name is a token, a value is Latin-1 text
    with no control character (a CR or LF would end the header; a NUL drops the connection)."""
    if not isinstance(value, dict):
        raise RunError(f"headers must be a mapping of names to values, not {type(value).__name__}")
    headers = {}
    for key, item in value.items():
        name, text = str(key), "" if item is None else str(item)
        if not _TOKEN.fullmatch(name):
            raise RunError(f"the header name {shown(name)!r} is not a valid HTTP header name")
        if name.lower() in GATEWAY_HEADERS:
            raise RunError(f"the header {name} cannot be set: {GATEWAY_HEADERS[name.lower()]}")
        if not _FIELD_VALUE.fullmatch(text):
            raise RunError(f"the value of header {name} holds characters HTTP headers cannot "
                           f"carry (control characters, or beyond Latin-1): {shown(text)!r}")
        headers[name] = text
    return headers


def _content_type(value: Any) -> str | None:
    """A `content_type` as the Content-Type header can carry it (see `_headers`)."""
    if value is None or value == "":
        return None
    text = str(value)
    if not _FIELD_VALUE.fullmatch(text):
        raise RunError("the content_type holds characters HTTP headers cannot carry (control "
                       f"characters, or beyond Latin-1): {shown(text)!r}")
    return text


async def return_data(ctx: RunContext, args: dict[str, Any]) -> Reply:
    given = args.get("headers")
    headers = _headers(given) if given else {}
    status = _status(args.get("status"), 200, low=200)  # a 1xx is no final answer
    content_type = _content_type(args.get("content_type"))
    if "text" in args:
        text = args["text"]
        return Reply(text="" if text is None else str(text), status=status, headers=headers,
                     content_type=content_type or "text/plain; charset=utf-8")
    return Reply(data=args.get("data", {}), status=status, headers=headers,
                 content_type=content_type)


async def terminate(ctx: RunContext, args: dict[str, Any]) -> Reply:
    return Reply(data={})


async def fail(ctx: RunContext, args: dict[str, Any]) -> Any:
    raise StepFailedError(str(args.get("message", "The workflow failed")),
                          status=_status(args.get("status"), 400, low=400),
                          code=str(args.get("code") or "FAILED"))


async def log(ctx: RunContext, args: dict[str, Any]) -> Any:
    level = _LEVELS.get(str(args.get("level", "info")), logging.INFO)
    ctx.log.log(level, "%s [run %s] %s", ctx.workflow, ctx.run_id,
                _loggable(str(args.get("message")), ctx.hidden | ctx.passwords))
    return None


def _loggable(text: str, hidden: frozenset[str]) -> str:
    """One line of a log: no secret value (of four characters or more) and no control
    character a caller could use to start a line of their own."""
    for secret in sorted(hidden, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode(), text)


async def trigger_event(ctx: RunContext, args: dict[str, Any]) -> Any:
    """The event runs for the caller, through its privacy rules; with the step's
    `ignore_privacy_rules` (allowed where the workflow's own would be), through none. The
    run's steps, changes and jobs are shared either way."""
    caller = ctx
    if args.get("ignore_privacy_rules") is True:
        caller = replace(ctx, viewer=EXEMPT, ignore_privacy_rules=True)
    return await ctx.call_event(caller, str(args["event"]), args.get("params") or {})


def check_trigger(check: StepCheck, args: Mapping[str, Any]) -> None:
    """The event exists, and the constant parameters it is given are its own and fit."""
    name = args["event"]
    declared_params = check.event_params(name, check.base + "/event")
    if declared_params is None:
        return
    check_call_params(check, args, declared_params, f"custom event '{name}'",
                      ("ref.unknown-event-param", "ref.missing-event-param"))


def check_return(check: StepCheck, args: Mapping[str, Any]) -> None:
    """No header the gateway writes itself; in a custom event, what is returned is what the
    event declares."""
    headers = args.get("headers")
    if isinstance(headers, Mapping):
        for name in headers:
            reason = GATEWAY_HEADERS.get(str(name).lower())
            if reason is not None:
                check.error(f"{check.base}/headers/{name}", "value.gateway-header",
                            f"the header {name} cannot be set: {reason}")
    if check.kind != DocumentKind.CUSTOM_EVENT:
        return
    if not check.returns:
        if args.get("data") or "text" in args:
            check.error(check.base, "event.bad-return",
                        "this custom event returns values but declares no 'returns'")
        return
    if "text" in args:
        check.error(check.base + "/text", "event.bad-return",
                    "a custom event returns data, not text")
        return
    data = args.get("data", {})
    if not isinstance(data, dict):
        return
    declared = {p.name: p for p in check.returns}
    for key in data:
        pointer = ptr.join(check.base, "data", key)
        if key not in declared:
            check.error(pointer, "event.bad-return", f"'{key}' is not one of the declared returns"
                        + did_you_mean(key, declared), key=True)
        else:
            check.check_value(pointer, data[key], declared[key].type, declared[key].list)
    for param in check.returns:
        if param.name not in data and not param.optional:
            check.error(check.base + "/data" if "data" in args else check.base,
                        "event.bad-return", f"the declared return '{param.name}' is missing")


ACTIONS = (
    Action("set", set_values, waits=False),
    Action("return_data", return_data, check=check_return, waits=False, replies=True),
    Action("terminate", terminate, waits=False),
    Action("fail", fail, waits=False),
    Action("log", log, waits=False),
    Action("trigger_event", trigger_event, check=check_trigger, event_arg="event"),
)
