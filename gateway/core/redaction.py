"""What the run log and the server log keep of a run's values: secrets out, by key name and by
value, and a short form of whatever a refused call sent."""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote, quote_plus

from gateway.core.encoding import MAX_DEPTH, integer_marker

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


# --- size: what one run-log row may hold ------------------------------------------------

CUT_KEY = "[cut]"  # a mapping's marker: how many of its keys were left out


def _size(item: Any) -> int:
    """About the bytes of JSON `item` takes (`size_within` and `cut_to` agree on it)."""
    if isinstance(item, str):
        return 2 + (len(item) if item.isascii() else len(item.encode("utf-8", "replace")))
    if item is None or isinstance(item, bool):
        return 5
    if isinstance(item, int):
        return 2 + item.bit_length() * 3 // 10  # its decimal digits, about
    return 24  # a float's repr, a date's text


def size_within(value: Any, limit: int) -> bool:
    """Whether `value` takes at most `limit` bytes of JSON, about: counted without writing
    it, and only until the count passes `limit` (at most `limit` characters are read)."""
    size, stack = 0, [value]
    while stack and size <= limit:
        item = stack.pop()
        if isinstance(item, dict):
            size += 1 + 2 * len(item)
            for key, child in item.items():
                stack.append(str(key))
                stack.append(child)
        elif isinstance(item, list | tuple):
            size += 1 + len(item)
            stack.extend(item)
        elif isinstance(item, str) and len(item) > limit:
            return False
        else:
            size += _size(item)
    return size <= limit


def cut_to(value: Any, limit: int) -> Any:
    """`value` as the run log keeps it: whole when it takes at most `limit` bytes of JSON
    (`size_within`), else what fits of it, in order, each cut marked with what it left out
    (`… [cut: 884,000 of 900,000 characters]`, a last item `[cut: 90 of 100 items]`, a key
    `[cut]`: `3 of 40 keys`). The work is bounded by `limit`, not by the value's size."""
    if size_within(value, limit):
        return value
    return _cut(value, [limit], 0)


def _cut(value: Any, room: list[int], depth: int) -> Any:
    """What fits of `value` in `room[0]` bytes, which it uses up."""
    if isinstance(value, str):
        return _cut_text(value, room)
    if not isinstance(value, dict | list | tuple):
        room[0] -= _size(value)
        return value
    if depth >= MAX_DEPTH:
        return _TOO_DEEP
    room[0] -= 2
    if isinstance(value, dict):
        kept: dict[str, Any] = {}
        for index, (key, child) in enumerate(value.items()):
            if room[0] <= 0:
                kept[CUT_KEY] = f"{len(value) - index:,} of {len(value):,} keys"
                break
            room[0] -= 2  # a colon and a comma
            name = _cut_text(str(key), room)
            kept[name] = _cut(child, room, depth + 1)
        return kept
    items: list[Any] = []
    for index, child in enumerate(value):
        if room[0] <= 0:
            items.append(f"[cut: {len(value) - index:,} of {len(value):,} items]")
            break
        room[0] -= 1  # a comma
        items.append(_cut(child, room, depth + 1))
    return items


def _cut_text(text: str, room: list[int]) -> str:
    size = _size(text) if len(text) <= room[0] else room[0] + 1
    if size <= room[0]:
        room[0] -= size
        return text
    head = text[:max(room[0], 0)]
    if not head.isascii():  # keep whole characters, within the bytes left
        head = head.encode("utf-8", "replace")[:max(room[0], 0)].decode("utf-8", "ignore")
    room[0] -= len(head) + 2
    return f"{head}… [cut: {len(text) - len(head):,} of {len(text):,} characters]"
