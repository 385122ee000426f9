"""Parameters detected from a sample request, Bubble's "detect request data": each key of
the sample with a guessed type, as YAML to paste under a workflow's `params:`.

Types: `boolean`, `integer`, `number`, `date` (an ISO 8601 date or date-time string),
`text`, `object`, and any of them with `list: true` (an empty list is a list of text). A
null value is `text`, optional. Keys that cannot name a parameter are listed, not dropped
silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import yaml

PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?$")
MAX_PARAMS = 1000  # a sample with more keys is cut here, and says so


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, str) and _ISO_DATE.match(value.strip()):
        try:
            (datetime if len(value.strip()) > 10 else date).fromisoformat(
                value.strip().replace("Z", "+00:00"))
            return "date"
        except ValueError:
            return "text"
    return "text"


def _of_items(items: list[Any]) -> str:
    kinds = {_scalar(item) for item in items if item is not None}
    if kinds == {"integer", "number"}:
        return "number"
    return kinds.pop() if len(kinds) == 1 else "text"


def detect(sample: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The parameters, by name, and the keys that could not be parameters."""
    params: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for key, value in sample.items():
        name = str(key)
        if not PARAM_NAME.match(name) or len(params) >= MAX_PARAMS:
            skipped.append(name)
            continue
        if isinstance(value, list):
            params[name] = {"type": _of_items(value), "list": True}
        elif value is None:
            params[name] = {"type": "text", "optional": True}
        else:
            params[name] = {"type": _scalar(value)}
    return params, skipped


def as_yaml(sample: Mapping[str, Any]) -> str:
    """The detected parameters as a `params:` block, with a comment for skipped keys."""
    params, skipped = detect(sample)
    text = yaml.safe_dump({"params": params}, sort_keys=False, default_flow_style=None,
                          width=100) if params else "params: {}\n"
    if skipped:
        shown = ", ".join(repr(name[:40]).replace("\n", " ") for name in skipped[:20])
        more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        text += f"# not parameter names, left out: {shown}{more}\n"
    return text
