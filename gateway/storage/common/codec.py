"""Turning records, runs and cursors into what the databases hold, and back.

Shared by both backends so that a record reads the same whichever database stored it.
Datetimes are stored as fixed-width ISO 8601 UTC strings (`2024-05-01T12:00:00.000000Z`):
fixed width makes text order equal time order, so dates compare and sort as plain text
and an ordinary expression index serves them.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway.core.clock import utc_now
from gateway.core.encoding import dumps_lenient, iso, loads, parse_iso, roundtrip
from gateway.core.errors import ValidationError
from gateway.core.ids import new_id
from gateway.core.redaction import cut_to
from gateway.storage.common import rollup
from gateway.storage.contract import FieldSpec, Page, TypeSpec

# Names end up inside SQL string literals and JSON paths: quotes and backslashes would need
# a second layer of escaping there, so they are refused outright.
_SAFE_NAME = re.compile(r"[^\"'\\\x00-\x1f]+")


def check_name(name: str, what: str) -> str:
    if not _SAFE_NAME.fullmatch(name):  # `$` would let a final line break through
        raise ValidationError(f"invalid {what} name {name!r}")
    return name


def with_defaults(spec: TypeSpec | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(fields)
    if spec is not None:
        for name, field in spec.fields.items():
            if name not in data and field.default is not None:
                data[name] = field.default
    return data


def _decode_date(value: Any) -> Any:
    return parse_iso(value) if isinstance(value, str) else value


def decode_fields(spec: TypeSpec | None, data: dict[str, Any]) -> dict[str, Any]:
    """Turn the stored text of declared `date` fields back into datetimes, and the stored
    values of option set fields into their options, in place."""
    if spec is None:
        return data
    for name, field in spec.fields.items():
        value = data.get(name)
        if value is None:
            continue
        if field.options is not None:
            data[name] = field.options.stored(value)
            continue
        if field.type != "date":
            continue
        data[name] = [_decode_date(v) for v in value] if field.list else _decode_date(value)
    return data


def to_storable(field: FieldSpec | None, value: Any) -> Any:
    """A search value as the database compares it (datetimes become their stored text)."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, str) and type(value) is not str:
        return str(value)  # an option: its value, as plain text the drivers bind
    if isinstance(value, list):
        return [to_storable(field, v) for v in value]
    return value


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


MAX_OFFSET = 2**62  # any larger offset is no cursor this store ever gave


def page(results: list[dict[str, Any]], total: int, offset: int) -> Page:
    """One page of `total` matches that starts at `offset`, with the cursor to the next."""
    remaining = max(total - offset - len(results), 0)
    cursor = encode_cursor(offset + len(results)) if remaining and results else None
    return Page(results, total, remaining, cursor)


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        offset = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValidationError(f"invalid cursor {cursor!r}") from exc
    if prefix != "o" or not 0 <= offset <= MAX_OFFSET:
        raise ValidationError(f"invalid cursor {cursor!r}")
    return offset


RunRow = tuple[str, str, str, str, str, float | None]
# `\u0000` in JSON text that is not itself an escaped backslash followed by `u0000`.
_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
NUL_REPLACEMENT = "\\ufffd"


def without_nul(text: str) -> str:
    """JSON text with every NUL character (`\\u0000`, which PostgreSQL's JSONB refuses in
    any string) replaced by U+FFFD, the replacement character."""
    if "\\u0000" not in text:
        return text
    return _NUL.sub(lambda m: m.group(1) + NUL_REPLACEMENT, text)


CUT = ("params", "result", "error", "steps")  # a run's values that may be long


def run_row(run: Mapping[str, Any], most: int | None = None) -> RunRow:
    """(id, workflow, status, started_at ISO text, JSON document, duration in ms if it is a
    number) for one run, the duration for the rollup (see `rollup`); the run log
    never refuses a run, so whatever JSON cannot hold is kept as its repr or a marker, and a
    NUL character as U+FFFD (the same on both backends). A document longer than `most`
    characters has each of its values (`CUT`: parameters, result, error, steps) cut to
    `most` bytes, each cut marked (`redaction.cut_to`): the document, written anyway, tells
    at no cost whether a value can be over."""
    started = run.get("started_at")
    started_at = iso(started if isinstance(started, datetime) else utc_now())
    run_id, workflow, status = run.get("id"), run.get("workflow", ""), run.get("status", "")
    if type(run_id) is not str or not run_id:
        run_id = str(run_id or new_id())
    if type(workflow) is not str or type(status) is not str:
        workflow, status = str(workflow), str(status)
    took = rollup.duration(run.get("duration_ms"))
    try:
        text = without_nul(dumps_lenient({**run, "id": run_id, "started_at": started_at}))
        if most is not None and len(text) > most:
            cut = {key: cut_to(run[key], most) for key in CUT if key in run}
            text = without_nul(dumps_lenient({**run, **cut, "id": run_id,
                                              "started_at": started_at}))
    except Exception as exc:  # noqa: BLE001 - the run is still recorded, as its summary
        return summary_row((run_id, workflow, status, started_at, "", took), exc)
    return run_id, workflow, status, started_at, text, took


def summary_row(row: RunRow, exc: BaseException) -> RunRow:
    """`row` with its document cut down to what the columns hold, for a run whose document
    could not be encoded or that the database refused; the error says why."""
    run_id, workflow, status, started_at, _, took = row
    summary = {"id": run_id, "workflow": workflow, "status": status, "started_at": started_at,
               "error": {"code": "RUN_LOG", "message": (
                   f"the run log could not keep this run's details ({type(exc).__name__}); "
                   "only its summary was recorded")}}
    return run_id, workflow, status, started_at, without_nul(dumps_lenient(summary)), took


def decode_run(text: str | Mapping[str, Any]) -> dict[str, Any]:
    run = _load_run(text) if isinstance(text, str) else dict(text)
    if isinstance(run.get("started_at"), str):
        run["started_at"] = parse_iso(run["started_at"])
    return run


def _load_run(text: str) -> Any:
    try:
        return loads(text)
    except ValueError:  # a number orjson cannot read (a run stored before markers existed)
        return json.loads(text)


def log_unrecordable(run: Mapping[str, Any]) -> None:
    logging.getLogger(__name__).exception("could not queue run %r for the run log", run.get("id"))


def json_roundtrip(data: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = roundtrip(data)
    return result
