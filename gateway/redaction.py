"""What the run log and the server log keep of a run's values: secrets out, by key name and by
value, and a short form of whatever a refused call sent."""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote, quote_plus

from gateway.encoding import MAX_DEPTH, integer_marker

_SECRET_KEY = re.compile(
    r"passw(or)?d|passphrase|secret|token|api[-_]?key|authorization|signature|cookie", re.I)
REDACTED = "[redacted]"


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


_TOO_DEEP = f"<nested deeper than {MAX_DEPTH} levels>"
_SCALARS = frozenset({int, float, bool, type(None), datetime})


# Keys seen to be plain (not secret-looking): parameter and field names, mostly the same few
# on every run; a set is cheaper to ask than the cached function. Bounded: past its size,
# new keys are asked of the function each time.
_PLAIN_KEYS: set[str] = set()
_MAX_PLAIN_KEYS = 4096


def _is_plain(mapping: dict[Any, Any]) -> bool:
    """A flat mapping of scalars with no secret-looking key: nothing in it to redact."""
    for key, value in mapping.items():
        kind = type(value)
        if kind is not str and kind not in _SCALARS:
            return False
        if key not in _PLAIN_KEYS:
            if type(key) is not str or _is_secret_key(key):
                return False
            if len(_PLAIN_KEYS) < _MAX_PLAIN_KEYS:
                _PLAIN_KEYS.add(key)
    return True


def secret_forms(secret: str) -> frozenset[str]:
    """A secret as a message or a URL may carry it: as it is, lower-cased (a host name),
    percent-encoded (a template's `urlencode`, a URL's path), and escaped as `repr` and JSON
    write it (an HTTP library quoting a header value it refused). `redact` looks for each."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret),
             repr(secret)[1:-1], json.dumps(secret)[1:-1]}
    if len(secret) >= 8:  # a short one lower-cased could be a word ("TRUE", "true")
        forms.add(secret.lower())
    return frozenset(forms)


def redact(value: Any, hidden: frozenset[str], depth: int = 0) -> Any:
    """`value` with every value under a secret-looking key, and every text of `hidden` in
    any string, replaced by `[redacted]` (a copy where anything may change)."""
    if isinstance(value, dict):
        if not hidden and _is_plain(value):
            return value  # the common case: no copy
        if depth >= MAX_DEPTH:  # what the run log would cut anyway; no deeper recursion
            return _TOO_DEEP
        return {k: REDACTED if _is_secret_key(str(k)) else redact(v, hidden, depth + 1)
                for k, v in value.items()}
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            return _TOO_DEEP
        return [redact(item, hidden, depth + 1) for item in value]
    if isinstance(value, str):
        for secret in hidden:
            if secret in value:
                value = value.replace(secret, REDACTED)
    return value


def short_repr(value: Any) -> str:
    """`repr(value)`, or a marker when there is none (an integer over 4,300 digits, nesting
    deeper than the interpreter's recursion limit)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return integer_marker(value) if value.bit_length() > 1024 else repr(value)
    try:
        return repr(value)
    except (ValueError, RecursionError):
        return f"<{type(value).__name__} that cannot be shown>"
