"""Bubble's "use field display for key names" for what a workflow returns: every record
in a reply keyed by its fields' displays (`First Name`) instead of their names, which
templates keep using."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gateway.runtime.context import Reply
from gateway.runtime.model import Registry
from gateway.storage.contract import TypeSpec

MAX_DEPTH = 64  # as deep as the privacy cut looks for records in a reply


def keyed_by_display(value: Any, types: Mapping[str, TypeSpec], depth: int = 0) -> Any:
    """`value` with each record in it (a mapping with `_id` and the `_type` of a declared
    type) keyed by its fields' displays; the rest as it is."""
    if depth > MAX_DEPTH:
        return value
    if isinstance(value, list):
        return [keyed_by_display(item, types, depth + 1) for item in value]
    if not isinstance(value, dict):
        return value
    spec = types.get(value["_type"]) if isinstance(value.get("_type"), str) else None
    if spec is not None and "_id" in value:
        return spec.keyed(value)
    return {key: keyed_by_display(item, types, depth + 1) for key, item in value.items()}


def displayed_types(registry: Registry) -> Mapping[str, TypeSpec]:
    """The types whose records a reply keys by display: none unless the settings ask for
    display keys (`workflow_api: {display_keys: true}`), and only those with a display."""
    if not registry.settings.workflow_api_display_keys:
        return {}
    return {name: spec for name, spec in registry.data_types.items()
            if any(f.display for f in spec.fields.values())}


def keyed_reply(reply: Reply, types: Mapping[str, TypeSpec]) -> Reply:
    """`reply` with the records in its data keyed by their fields' displays."""
    if reply.data is None:
        return reply
    return replace(reply, data=keyed_by_display(reply.data, types))
