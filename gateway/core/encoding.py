"""JSON and dates, one way for the whole gateway: the wire, the records, the run log.

A date is always written as fixed-width ISO 8601 in UTC with microseconds
(`2024-05-01T12:00:00.000000Z`): the same text whether a caller reads it in a response, a
template renders it with `tojson`, or a database stores it, and fixed width makes text order
equal time order, so stored dates compare and sort as plain text.

orjson does the work (ten times faster than the standard library, which every request
feels); the standard library takes what orjson refuses (integers over 64 bits). The lenient
form, for the run log, never raises: what JSON cannot hold is first made plain (`_tame`).
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson


def iso(value: datetime) -> str:
    """Fixed-width UTC text; a naive datetime is taken to be UTC already."""
    zone = value.tzinfo
    if zone is UTC and value.microsecond:  # the common case, written by orjson (in C)
        return orjson.dumps(value, option=orjson.OPT_UTC_Z)[1:-1].decode()
    if zone is not None and zone is not UTC:
        value, zone = value.astimezone(UTC), UTC
    # `isoformat()` leaves out zero microseconds; with them its text is the shorter to make.
    text = value.isoformat() if value.microsecond else value.isoformat(timespec="microseconds")
    return (text if zone is None else text[:26]) + "Z"  # without the "+00:00" of an aware one


def parse_iso(text: str) -> datetime:
    """The inverse of `iso` (any ISO 8601 text with an offset, as an aware UTC datetime)."""
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"a value of type {type(value).__name__} cannot be written as JSON")


def _lenient_default(value: Any) -> Any:
    try:
        return _default(value)
    except TypeError:
        pass
    try:
        return repr(value)  # the run log keeps anything, as its repr
    except Exception:  # noqa: BLE001 - a repr may fail any way; the run log must not
        return f"<{type(value).__name__}>"


# Deeper than this the run log keeps a marker: orjson stops at 254 levels, and Python's own
# encoder would meet the recursion limit.
MAX_DEPTH = 100
# Beyond the float range orjson cannot read an integer back (and beyond 4,300 digits Python
# will not even write it): the run log keeps a marker instead.
_FLOAT_RANGE = 2**1023


def integer_marker(value: int) -> str:
    """`<integer of 4301 digits>`: what the run log keeps of an integer too large to read."""
    try:
        digits = len(str(abs(value)))
    except ValueError:  # over Python's limit on converting integers to text
        digits = int(abs(value).bit_length() * math.log10(2)) + 1
    return f"<integer of {digits} digits>"


def _tame_text(value: str) -> str:
    try:
        value.encode()
        return value
    except UnicodeEncodeError:  # lone surrogates (from a command line, say): kept as escapes
        return value.encode("utf-8", "backslashreplace").decode()


def _tame(value: Any, depth: int = 0) -> Any:
    """`value` with everything JSON (and a database) cannot hold made plain: huge integers,
    lone surrogates, non-finite floats, nesting deeper than `MAX_DEPTH`."""
    if depth > MAX_DEPTH:
        return f"<nested deeper than {MAX_DEPTH} levels>"
    if isinstance(value, str):
        return _tame_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -_FLOAT_RANGE < value < _FLOAT_RANGE else integer_marker(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_tame_key(k): _tame(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_tame(item, depth + 1) for item in value]
    plain = _lenient_default(value)
    return plain if isinstance(plain, str) else _tame(plain, depth + 1)


def _tame_key(key: Any) -> str:
    plain = _tame(key, MAX_DEPTH)
    return plain if isinstance(plain, str) else _LENIENT.encode(plain)


_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
# Made once: `json.dumps` with options builds a new encoder on every call.
_STRICT = json.JSONEncoder(default=_default, ensure_ascii=False, separators=(",", ":"))
_LENIENT = json.JSONEncoder(default=_lenient_default, ensure_ascii=False, separators=(",", ":"))


def encode(value: Any) -> bytes:
    """JSON bytes; raises `TypeError` for a value JSON cannot hold."""
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return _STRICT.encode(value).encode()


def dumps(value: Any) -> str:
    return encode(value).decode()


def encode_lenient(value: Any) -> bytes:
    """JSON bytes of anything, never an error (for the run log): what JSON cannot hold is kept
    as its repr, or as a marker (`<integer of 4301 digits>`, `<nested deeper than 100
    levels>`)."""
    try:
        return orjson.dumps(value, default=_lenient_default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return _LENIENT.encode(_tame(value)).encode()


def dumps_lenient(value: Any) -> str:
    return encode_lenient(value).decode()


def dumps_pretty(value: Any, indent: int | None = 2) -> str:
    """Indented JSON text for people (the `tojson` filter, `gateway runs show`)."""
    return json.dumps(value, default=_lenient_default, ensure_ascii=False, indent=indent)


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises `ValueError` (orjson's `JSONDecodeError` is one)."""
    return orjson.loads(data)


# JSON integers longer than this are refused: reading one costs time quadratic in it.
MAX_INTEGER_DIGITS = 1000
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def loads_exact(data: bytes) -> Any:
    """Parse JSON a caller sent (a request's body, a sample), integers exact: orjson reads an
    integer past 64 bits as a float (a 100-digit id would arrive as 1e+100), so a text with
    one is read again by the standard library, up to `MAX_INTEGER_DIGITS`. Raises
    `ValueError` (`UnicodeDecodeError` is one) for anything else, nesting too deep included;
    NaN, Infinity and numbers out of a float's range are not JSON."""
    parsed = orjson.loads(data)
    if _LONG_NUMBER.search(data):
        try:
            parsed = json.loads(data, parse_int=_integer, parse_constant=_no_constant)
        except RecursionError as exc:  # orjson takes 1,024 levels, the standard library less
            raise ValueError("the JSON is nested too deeply") from exc
    return parsed


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ValueError(f"an integer has more than {MAX_INTEGER_DIGITS} digits")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def size_over(value: Any, limit: int) -> int:
    """At least how many bytes `value` takes as JSON, counted without writing it, and only
    until the count passes `limit` (a result over `limit` means "too large", not a size).
    Never more than the real size, so nothing small is refused."""
    size = 0
    stack = [value]
    while stack and size <= limit:
        item = stack.pop()
        if isinstance(item, str):
            size += 2 + (len(item) if item.isascii() else len(item.encode("utf-8", "replace")))
        elif isinstance(item, dict):
            size += 1 + 2 * len(item)  # braces, colons and commas
            for key, child in item.items():
                stack.append(str(key))
                stack.append(child)
        elif isinstance(item, (list, tuple)):
            size += 1 + len(item)
            stack.extend(item)
        else:
            size += 1  # a number, a boolean, null or a date: a byte at least
    return size


def roundtrip(value: Any) -> Any:
    """`value` as it reads back from JSON (dates become their text)."""
    return loads(encode(value))


_CONTROL = {code: f"\\x{code:02x}" for code in range(32) if chr(code) not in "\t"}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", 0x7F: "\\x7f", 0x2028: "\\u2028",
                 0x2029: "\\u2029"})


def escape(text: str) -> str:
    """Text for one line of a log: control characters and line breaks written as escapes,
    so that what a caller sent cannot start a line of its own."""
    return text.translate(_CONTROL)
