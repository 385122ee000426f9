"""A run's time zone, from its workflow's `timezone`: a zone named at load time, or a
template over what started the run (the request; a trigger's `before` and `after`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, tzinfo
from typing import Any

from gateway.core.errors import GatewayError, InvalidDataError
from gateway.runtime.model import Workflow
from gateway.templates.environment import zone_named


def zone_of(workflow: Workflow, request: Mapping[str, Any] | None,
            names: Mapping[str, Any] | None) -> tzinfo:
    """The zone of this run of `workflow` (which names one): a template that gives nothing
    (null, "") means UTC; one that fails, or gives a name that is no IANA zone, is the
    caller's 400 INVALID_DATA, naming what it gave."""
    assert workflow.timezone is not None
    scope = {"request": request or {}, **(names or {})}
    try:
        value = workflow.timezone(scope)
    except GatewayError as exc:
        raise InvalidDataError(f"The time zone of workflow {workflow.name} could not be read: "
                               f"{exc.message}") from exc
    if value is None or value == "":
        return UTC
    try:
        return zone_named(value)
    except ValueError as exc:
        raise InvalidDataError(f"Invalid time zone for workflow {workflow.name}: {exc}") from exc
