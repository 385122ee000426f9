"""What an API workflow or a database trigger says about its whole run: its `timezone` (an
IANA name, checked here, or a template over what starts the run)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.config.source import DocumentKind
from gateway.templates import templating
from gateway.templates.environment import zone_named
from gateway.templates.templating import Compiled

if TYPE_CHECKING:
    from gateway.compiler.steps import Site

# What a `timezone` template may read: the request, or the record a trigger fired for.
ZONE_NAMES: dict[str, frozenset[str]] = {
    DocumentKind.API_WORKFLOW: frozenset({"request"}),
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
