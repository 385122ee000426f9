"""Traces of requests, runs, steps, jobs and outbound calls, as OpenTelemetry spans.

Off unless the settings say `tracing: {enabled: true}`; then a process that runs workflows
(serve, worker, run) starts one `Tracing` with its services, and everything that makes a
span asks for it there (`Services.tracing`), finding None when tracing is off: the only
cost it then pays is that test. The OpenTelemetry SDK and its OTLP exporter (the `otel`
extra) are imported only when tracing starts (`gateway.tracing.otel`).
"""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING

from gateway.core.settings import Settings

if TYPE_CHECKING:
    from gateway.tracing.otel import Tracing

EXTRA = "pip install 'workflow-gateway[otel]'"
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


class TracingUnavailableError(Exception):
    """Tracing is on and the packages it needs are not installed."""


def missing() -> str | None:
    """Why tracing cannot start here (the extra is not installed), or None."""
    for module in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return (f"tracing.enabled needs the OpenTelemetry SDK and its OTLP exporter, "
                    f"which are not installed: {EXTRA}")
    return None


def start(settings: Settings) -> Tracing | None:
    """The process's tracing as `settings` say, or None when it is off."""
    if not settings.tracing_enabled:
        return None
    reason = missing()
    if reason is not None:
        raise TracingUnavailableError(reason)
    from gateway.tracing.otel import Tracing  # the SDK: loaded only when tracing is on

    return Tracing(settings)


def trace_id_of(run: dict[str, object]) -> str | None:
    """The trace id a run-log row keeps (a traced run's), or None."""
    found = run.get("trace_id")
    return found if isinstance(found, str) and _TRACE_ID.fullmatch(found) else None


def trace_link(ui_url: str | None, trace_id: str | None) -> str | None:
    """Where `tracing.ui_url` shows the trace `trace_id`, or None."""
    if ui_url is None or trace_id is None or not _TRACE_ID.fullmatch(trace_id):
        return None
    return ui_url.replace("{trace_id}", trace_id)
