"""What an API workflow or a database trigger says about its whole run: its `timezone` (an
IANA name, checked here, or a template over what starts the run), for an API workflow,
its `error_redirect` (a URL the settings allow, checked here when it is no template), and
for an API workflow, a custom event or a database trigger its flow control
(`concurrency`, `throttle`, `debounce`, `singleton`: key templates over `params`, or over
`before` and `after`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Protocol

from gateway.actions.redirects import check_target
from gateway.config.source import DocumentKind
from gateway.core.settings import parse_duration
from gateway.runtime.action_spec import StepCheck
from gateway.runtime.model import Concurrency, Debounce, Flow, Throttle
from gateway.templates import templating
from gateway.templates.environment import zone_named
from gateway.templates.templating import Compiled


class Site(StepCheck, Protocol):
    """What reading a run's options needs of the place they are in (a `steps.Site`, not
    imported: the steps pass imports this one): a step check's view, and templates that
    may read only some names."""

    def leaf_with(self, names: frozenset[str], pointer: str, text: str) -> Compiled: ...

# What a `timezone` template may read: the request, or the record a trigger fired for.
ZONE_NAMES: dict[str, frozenset[str]] = {
    DocumentKind.API_WORKFLOW: frozenset({"request"}),
    DocumentKind.DATABASE_TRIGGER: frozenset({"before", "after"})}
REDIRECT_NAMES = frozenset({"request"})
# What a flow control key template may read: the job's parameters, as its run sees them;
# for a database trigger, the record as the run that fired it first saw and left it.
MAX_WAIT = timedelta(seconds=60)  # the longest an HTTP call waits for room under its keys
KEY_NAMES: dict[str, frozenset[str]] = {
    DocumentKind.API_WORKFLOW: frozenset({"params"}),
    DocumentKind.CUSTOM_EVENT: frozenset({"params"}),
    DocumentKind.DATABASE_TRIGGER: frozenset({"before", "after"})}


def timezone_of(site: Site, data: Mapping[str, Any]) -> Compiled | None:
    value = data.get("timezone")
    names = ZONE_NAMES.get(site.kind)
    if not isinstance(value, str) or names is None:
        return None
    if templating.is_template(value):
        return site.leaf_with(names, "/timezone", value)
    try:
        return templating.constant(zone_named(value))
    except ValueError as exc:
        site.error("/timezone", "timezone.unknown", str(exc))
        return None


def error_redirect_of(site: Site, data: Mapping[str, Any]) -> Compiled | None:
    value = data.get("error_redirect")
    if not isinstance(value, str) or site.kind != DocumentKind.API_WORKFLOW:
        return None
    if templating.is_template(value):
        return site.leaf_with(REDIRECT_NAMES, "/error_redirect", value)
    check_target(site, "/error_redirect", value)
    return templating.constant(value)


def flow_of(site: Site, data: Mapping[str, Any]) -> Flow | None:
    """An API workflow's, custom event's or database trigger's flow control (the schema
    checked its shapes); None when it declares none."""
    names = KEY_NAMES.get(site.kind)
    if names is None:
        return None
    concurrency, throttle = _block(data, "concurrency"), _block(data, "throttle")
    debounce, singleton = _block(data, "debounce"), _block(data, "singleton")
    flow = Flow(
        concurrency=None if concurrency is None else Concurrency(
            _key(site, names, "concurrency", concurrency),
            _count(concurrency.get("limit", 1)), _wait(concurrency.get("max_wait"))),
        throttle=None if throttle is None else Throttle(
            _key(site, names, "throttle", throttle), _count(throttle.get("limit")),
            _duration(throttle.get("per")) or timedelta(seconds=1),
            _wait(throttle.get("max_wait"))),
        debounce=None if debounce is None else Debounce(
            _key(site, names, "debounce", debounce),
            _duration(debounce.get("period")) or timedelta(0)),
        singleton=None if singleton is None else _key(site, names, "singleton", singleton))
    return None if flow == Flow() else flow


def _block(data: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """One flow control block, when it is a mapping with a key template (the schema
    reported any other shape)."""
    value = data.get(name)
    return value if isinstance(value, Mapping) and isinstance(value.get("key"), str) else None


def _key(site: Site, names: frozenset[str], name: str, value: Mapping[str, Any]) -> Compiled:
    return site.leaf_with(names, f"/{name}/key", value["key"])


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 1 else 1


def _wait(value: Any) -> timedelta:
    """An HTTP call's `max_wait`: at most `MAX_WAIT` (it holds a connection meanwhile)."""
    return min(_duration(value) or timedelta(0), MAX_WAIT)


def _duration(value: Any) -> timedelta | None:
    return parse_duration(value) if isinstance(value, str) else None
