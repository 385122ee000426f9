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
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.errors import ValidationError
from gateway.ids import new_id
from gateway.storage.interface import FieldSpec, Page, TypeSpec

# Names end up inside SQL string literals and JSON paths: quotes and backslashes would need
# a second layer of escaping there, so they are refused outright.
_SAFE_NAME = re.compile(r"^[^\"'\\\x00-\x1f]+$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime) -> str:
    """Fixed-width UTC text (`2024-05-01T12:00:00.000000Z`), so text order is time order."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"cannot store a value of type {type(value).__name__}")


def dumps(value: object) -> str:
    try:
        return orjson.dumps(value, default=_json_default, option=_ORJSON).decode()
    except orjson.JSONEncodeError:
        return _STRICT.encode(value)  # what orjson refuses (integers over 64 bits) or raises


def check_name(name: str, what: str) -> str:
    if not _SAFE_NAME.match(name):
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
    """Turn the stored text of declared `date` fields back into datetimes, in place."""
    if spec is None:
        return data
    for name, field in spec.fields.items():
        value = data.get(name)
        if field.type != "date" or value is None:
            continue
        data[name] = [_decode_date(v) for v in value] if field.list else _decode_date(value)
    return data


def to_storable(field: FieldSpec | None, value: Any) -> Any:
    """A search value as the database compares it (datetimes become their stored text)."""
    if isinstance(value, datetime):
        return iso(value)
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


def run_row(run: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
    """(id, workflow, status, started_at ISO text, JSON document) for one run."""
    started = run.get("started_at")
    started_at = iso(started if isinstance(started, datetime) else utcnow())
    run_id = run.get("id") or new_id()
    document = {**run, "id": run_id, "started_at": started_at}
    try:
        text = orjson.dumps(document, default=_lenient_default, option=_ORJSON).decode()
    except orjson.JSONEncodeError:
        text = _LENIENT.encode(document)
    return (str(run_id), str(run.get("workflow", "")), str(run.get("status", "")), started_at,
            text)


def _lenient_default(value: object) -> object:
    # The run log must never refuse a run: anything JSON cannot hold is kept as its repr.
    return iso(value) if isinstance(value, datetime) else repr(value)


# orjson first (ten times faster, which the run log of every request feels), with datetimes
# handed to our own default so that they keep the fixed-width form; the standard library for
# what orjson refuses. Its encoders are made once: `json.dumps` with options builds one per call.
_ORJSON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
_STRICT = json.JSONEncoder(default=_json_default, separators=(",", ":"), ensure_ascii=False)
_LENIENT = json.JSONEncoder(default=_lenient_default, separators=(",", ":"), ensure_ascii=False)


def decode_run(text: str | Mapping[str, Any]) -> dict[str, Any]:
    run = json.loads(text) if isinstance(text, str) else dict(text)
    if isinstance(run.get("started_at"), str):
        run["started_at"] = parse_iso(run["started_at"])
    return run


def log_unrecordable(run: Mapping[str, Any]) -> None:
    logging.getLogger(__name__).exception("could not queue run %r for the run log", run.get("id"))


def json_roundtrip(data: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(dumps(data))
    return result
