"""Log lines as JSON objects (`gateway serve --log-format json`): one object per line with
the time, level, logger and message, and the run's facts (`run_id`, `workflow`, `status`,
`duration_ms`, `method`, `path`, `http_status`) where a line carries them. Whatever a caller
sent is a JSON string value, so it cannot start a line of its own."""

from __future__ import annotations

import contextvars
import logging
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.core.encoding import escape
from gateway.core.errors import GatewayError
from gateway.core.redaction import redact

FIELDS = ("run_id", "workflow", "status", "duration_ms", "method", "path", "http_status")
ENV = "GATEWAY_LOG_FORMAT"  # set by `gateway serve --log-format` for its workers


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="microseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def log_config(fmt: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the server and uvicorn, in text or JSON."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if fmt == "json"
        else {"format": "%(levelname)s:     %(name)s: %(message)s"})
    handler = {"class": "logging.StreamHandler", "formatter": "default",
               "stream": "ext://sys.stderr"}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": "INFO"},
        "loggers": {name: {"handlers": [], "level": "INFO", "propagate": True}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


access = logging.getLogger("gateway.access")
# The facts of the run a request started, noted by the interpreter's observer for the
# request's access line (the request's own task, so no lock).
_RUN: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("run", default=None)
Observe = Callable[[str, str, str, float], None]


def noted(observe: Observe | None) -> Observe:
    """An observer that also notes the run for the access line (then calls `observe`)."""

    def note(run_id: str, workflow: str, status: str, milliseconds: float) -> None:
        facts = _RUN.get()
        if facts is not None:
            facts.update(run_id=run_id, workflow=workflow, status=status)
        if observe is not None:
            observe(run_id, workflow, status, milliseconds)

    return note


class AccessLog:
    """ASGI middleware: one line per request (method, path, HTTP status, duration, and the
    run's id, workflow and status when it started one). Used with JSON logs only."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        facts: dict[str, Any] = {"method": scope["method"], "path": scope["path"]}
        token = _RUN.set(facts)
        started = time.perf_counter()

        async def noted_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                facts["http_status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted_send)
        finally:
            _RUN.reset(token)
            facts["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
            access.info("%s %s %s", facts["method"], facts["path"],
                        facts.get("http_status", "-"), extra=facts)


def log_run_failure(log: logging.Logger, run_id: str, workflow: str, where: str,
                    error: GatewayError, hidden: frozenset[str]) -> None:
    """A failed run's line in the server log, with the traceback of a bug; secrets redacted
    and whatever a caller wrote escaped, so that no text can forge a line."""
    cause = error.__cause__ or error
    detail = f"{type(cause).__name__}: {cause}" if not isinstance(cause, GatewayError) \
        else error.message
    trace = "" if isinstance(cause, GatewayError) else "\n" + "".join(
        traceback.format_exception(cause)[:-1]).rstrip()  # the last line is `detail`
    log.error("run %s of %s failed at %s: %s%s", run_id, escape(workflow), escape(where),
              escape(redact(detail, hidden)), redact(trace, hidden))
