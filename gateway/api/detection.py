"""Parameters detected from a sample request, Bubble's "detect request data": each key of
the sample with a guessed type, as YAML to paste under a workflow's `params:`.

Types: `boolean`, `integer`, `number`, `date` (an ISO 8601 date or date-time string),
`text`, `object`, and any of them with `list: true` (an empty list is a list of text). A
null value (or empty text) is `text`, optional. Every type given takes the sample's own
value, as a request's parameters are read. Keys that cannot name a parameter, and values no
parameter type takes (a list with nulls or of mixed items), are listed, not dropped
silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from gateway.runtime.coercion import convert_value

PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # the whole name (`fullmatch`)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?")
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
    if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        return "date"
    return "text"


def _of_items(items: list[Any]) -> str | None:
    """The one type of a list's items, or None when no list type takes them all (a null
    item, a list in the list, items of different types)."""
    if any(item is None or isinstance(item, list) for item in items):
        return None
    kinds = {_scalar(item) for item in items}
    if kinds == {"integer", "number"}:
        return "number"
    if not kinds:
        return "text"
    return kinds.pop() if len(kinds) == 1 else None


def _takes(value: Any, type_name: str, is_list: bool = False) -> bool:
    """Whether a parameter of this type takes the sample's value, as a request's would be
    taken (a date out of range, an integer past a float's, are not)."""
    try:
        convert_value(value, type_name, is_list)
    except ValueError:
        return False
    return True


def _param(value: Any) -> dict[str, Any] | None:
    """The parameter the value suggests, one that takes the value itself; None if no
    parameter type does."""
    if value is None or value == "":  # no value, as the parameters' coercion reads it
        return {"type": "text", "optional": True}
    if isinstance(value, list):
        for kind in (_of_items(value), "text"):
            if kind is not None and _takes(value, kind, True):
                return {"type": kind, "list": True}
        return None
    for kind in (_scalar(value), "text"):
        if _takes(value, kind):
            return {"type": kind}
    return None


def detect(sample: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str],
                                                list[str]]:
    """The parameters, by name; the keys that could not be parameters; the keys whose
    value no parameter type takes (a list with nulls or of mixed items)."""
    params: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    untyped: list[str] = []
    for key, value in sample.items():
        name = str(key)
        if not PARAM_NAME.fullmatch(name) or len(params) >= MAX_PARAMS:
            skipped.append(name)
            continue
        found = _param(value)
        if found is None:
            untyped.append(name)
        else:
            params[name] = found
    return params, skipped, untyped


def as_yaml(sample: Mapping[str, Any]) -> str:
    """The detected parameters as a `params:` block, with a comment for keys left out."""
    params, skipped, untyped = detect(sample)
    text = yaml.safe_dump({"params": params}, sort_keys=False, default_flow_style=None,
                          width=100) if params else "params: {}\n"
    if skipped:
        text += f"# not parameter names, left out: {_names(skipped)}\n"
    if untyped:
        text += f"# no parameter type takes their sample values, left out: {_names(untyped)}\n"
    return text


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(name[:40]).replace("\n", " ") for name in names[:20])
    return shown + (f" and {len(names) - 20} more" if len(names) > 20 else "")
