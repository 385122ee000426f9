"""What a record, a search value and a record id may hold: the same on both backends.

Each backend has limits of its own (PostgreSQL text cannot hold NUL, a btree entry must fit
a third of a page; SQLite binds integers of at most 64 bits and compares JSON numbers as
doubles), and a value that one backend stores while the other fails on it would make the
same call succeed on one database and fail with a 500 on the other. So the values neither
can hold faithfully are refused on both, before any SQL runs, with a `ValidationError`
(400 `INVALID_DATA`) that names the field and never repeats the value.

These are facts of the backends, not policies to tune: raising `MAX_INDEXED_TEXT_BYTES`
past PostgreSQL's btree limit or `MAX_DEPTH` past the JSON encoder's would bring the 500s
back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from gateway.core.errors import ValidationError
from gateway.storage.contract import TypeSpec

INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # what both SQLite and PostgreSQL's bigint hold
# PostgreSQL refuses a btree entry over 2704 bytes (a third of a page, less its headers);
# a text at most this long fits uncompressed, so an indexed or unique field always does.
MAX_INDEXED_TEXT_BYTES = 2600
# Nesting of lists and objects inside one field: under orjson's 254 (past which encoding
# falls back to the slow encoder, which fails near Python's recursion limit) and SQLite's
# json() limit of 1000.
MAX_DEPTH = 200
_NUMERIC = frozenset({"number", "integer"})


def _problem(value: Any) -> str | None:
    """What makes `value` unstorable, or None. A walk with a stack of its own, not
    recursion: how deep a caller nests data must not decide how deep Python's stack goes."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            found = _text_problem(item)
        elif isinstance(item, bool) or not isinstance(item, int | dict | list | tuple):
            found = None
        elif isinstance(item, int):
            found = None if INT_MIN <= item <= INT_MAX else "an integer beyond 64 bits"
        elif depth >= MAX_DEPTH:
            found = f"lists or objects nested more than {MAX_DEPTH} deep"
        elif isinstance(item, dict):
            found = _first(_text_problem(k) for k in item if isinstance(k, str))
            stack.extend((v, depth + 1) for v in item.values())
        else:
            found = _flat_problem(item)
            if found is None:
                stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list | tuple))
        if found is not None:
            return found
    return None


def _flat_problem(items: list[Any] | tuple[Any, ...]) -> str | None:
    """The problem of the texts and integers of a list, checked in bulk (an `in` list may
    hold tens of thousands of them)."""
    texts = [v for v in items if type(v) is str]
    whole = [v for v in items if type(v) is int]
    if texts and (found := _text_problem("".join(texts))):
        return found
    if whole and not (INT_MIN <= min(whole) and max(whole) <= INT_MAX):
        return "an integer beyond 64 bits"
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "text with the NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "text that is not valid Unicode"
    return None


def _first(problems: Iterable[str | None]) -> str | None:
    return next((p for p in problems if p is not None), None)


def check_record(spec: TypeSpec | None, type_name: str, data: Mapping[str, Any]) -> None:
    """Raise `ValidationError` naming the first field of `data` that cannot be stored."""
    for key, value in data.items():
        problem = _problem({key: value})
        field = spec.fields.get(key) if spec is not None else None
        if problem is None and field is not None and (field.unique or field.indexed):
            problem = _indexed_problem(field.type, value)
        if problem is not None:
            raise ValidationError(f"field {_name(key)} of {type_name} cannot hold {problem}")


def _indexed_problem(type_name: str, value: Any) -> str | None:
    if type_name in _NUMERIC or not isinstance(value, str):
        return None
    if len(value) * 4 > MAX_INDEXED_TEXT_BYTES and len(value.encode()) > MAX_INDEXED_TEXT_BYTES:
        return f"more than {MAX_INDEXED_TEXT_BYTES} bytes of text (it is indexed)"
    return None


def check_search(key: str, value: Any) -> None:
    """Raise `ValidationError` when a search value is one no stored record can hold."""
    problem = _problem(value)
    if problem is not None:
        raise ValidationError(f"a search on {_name(key)} cannot compare {problem}")


def usable_id(id: str) -> bool:
    """False for an id no record can have (the store answers "no such record")."""
    return isinstance(id, str) and _text_problem(id) is None


def _name(key: Any) -> str:
    """A field name for a message: as declared, or, if it is unprintable, a placeholder."""
    text = str(key)
    return f"'{text}'" if text.isprintable() and len(text) <= 100 else "(an unprintable name)"


# --- increments ------------------------------------------------------------------------


class Increment(NamedTuple):
    """Add `amount` to field `key`: in 64-bit integers (`whole`), or in doubles."""

    key: str
    amount: int | float
    whole: bool


Increments = tuple[Increment, ...]


def increments(spec: TypeSpec | None, type_name: str, fields: Mapping[str, Any],
               amounts: Mapping[str, Any]) -> Increments:
    found = []
    for key, amount in amounts.items():
        field = spec.fields.get(key) if spec is not None else None
        whole = field is not None and field.type == "integer"
        if key in fields or (field is not None and (field.type not in _NUMERIC or field.list)):
            raise ValidationError(f"field {_name(key)} of {type_name} cannot be incremented"
                                  + (" and set at once" if key in fields else ""))
        if isinstance(amount, bool) or not isinstance(amount, int | float) or (
                whole and not isinstance(amount, int)) or not math.isfinite(amount):
            shown = "a whole number" if whole else "a number"
            raise ValidationError(f"the increment of field {_name(key)} of {type_name} must "
                                  f"be {shown}")
        found.append(Increment(key, amount, whole))
    return tuple(found)


def incremented(current: Any, step: Increment, type_name: str) -> int | float:
    """`current + step.amount` as both backends compute it, or `ValidationError` when the
    field holds no number or the sum goes beyond what the field holds."""
    if current is None:
        current = 0
    if isinstance(current, bool) or not isinstance(current, int | float):
        raise not_a_number((step.key,), type_name)
    if step.whole:
        total: int | float = int(current) + int(step.amount)
        if not INT_MIN <= total <= INT_MAX:
            raise out_of_range((step.key,), type_name)
        return total
    total = float(current) + float(step.amount)
    if not math.isfinite(total):
        raise out_of_range((step.key,), type_name)
    # What PostgreSQL gives back for a double: a whole one reads as an integer.
    return int(total) if total.is_integer() and INT_MIN <= total < INT_MAX else total


class NotANumberError(ValidationError):
    """An arithmetic on a field that holds something other than a number."""


class OutOfRangeError(ValidationError):
    """An arithmetic whose result is beyond what its field holds."""


def not_a_number(keys: Iterable[str], type_name: str) -> ValidationError:
    names = ", ".join(_name(k) for k in keys)
    return NotANumberError(f"cannot increment {names} of {type_name}: not a number")


def out_of_range(keys: Iterable[str], type_name: str) -> ValidationError:
    names = ", ".join(_name(k) for k in keys)
    return OutOfRangeError(f"cannot increment {names} of {type_name}: the result is beyond "
                           "what the field holds")
