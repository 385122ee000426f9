"""The one sandboxed Jinja environment templates run in, with the gateway's helpers: the
date functions and filters (`parse_date`, `format_date`), durations (`minutes(5)`), and a
`tojson` that writes dates as the rest of the gateway does.

A date without an offset is read in the run's time zone: UTC, unless the workflow names one
(`timezone`), which its run sets for the time it lasts (`set_zone`, `reset_zone`). A local
time that does not exist (in a DST gap) or happens twice (when clocks go back) is read as
`zoneinfo` reads it, with `fold=0`: the offset in force before the change (02:30 in a gap
that skips from 02:00 to 03:00 is 03:30 in summer time; 02:30 twice is the first one)."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from contextvars import ContextVar, Token
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from jinja2 import StrictUndefined

from gateway.core.encoding import dumps_pretty
from gateway.templates.budget import check_size
from gateway.templates.sandbox import Sandbox

_EPOCH_MS = re.compile(r"^\s*[0-9]{12,}\s*$")
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")
# The run's time zone, set only by runs of workflows that name one: None reads UTC.
_ZONE: ContextVar[tzinfo | None] = ContextVar("gateway_zone", default=None)


def zone_named(name: Any) -> tzinfo:
    """The IANA time zone `name`; a `ValueError` that names it when there is none."""
    if isinstance(name, tzinfo):
        return name
    if isinstance(name, str) and len(name) <= 64 and _ZONE_NAME.fullmatch(name):
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise ValueError(f"{_short(name)} is not an IANA time zone (e.g. Europe/Paris, UTC)")


def set_zone(zone: tzinfo) -> Token[tzinfo | None]:
    """Read dates without an offset in `zone` until `reset_zone` (a run's time)."""
    return _ZONE.set(zone)


def reset_zone(token: Token[tzinfo | None]) -> None:
    _ZONE.reset(token)


def parse_date(value: Any) -> datetime:
    """ISO 8601 text (or epoch milliseconds, as a number or as 12 digits or more) to an aware
    UTC datetime, text without an offset read in the run's time zone; anything else is a
    `ValueError` that says what it was given."""
    try:
        return _parse_date(value)
    except (ValueError, TypeError, OverflowError, OSError) as exc:
        raise ValueError(f"not a date: {_short(value)} ({exc})") from exc


def _parse_date(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    elif isinstance(value, str) and _EPOCH_MS.match(value):
        return _parse_date(int(value.strip()))  # epoch milliseconds sent as text (forms, query)
    elif isinstance(value, str) and value.strip().isascii():
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    else:
        raise ValueError("expected ISO 8601 text or epoch milliseconds")
    if parsed.tzinfo is None:
        zone = _ZONE.get()
        if zone is None:
            return parsed.replace(tzinfo=timezone.utc)
        return parsed.replace(tzinfo=zone).astimezone(timezone.utc)
    return parsed.astimezone(timezone.utc)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _format_date(value: Any, fmt: str | None = None, zone: Any = None) -> str:
    """`value` as `fmt` says, in `zone` (an IANA name), else in the run's time zone (UTC
    unless the workflow names one). The default format is ISO 8601 with `Z` in UTC, with the
    offset (`+0200`) in any other zone."""
    local = zone_named(zone) if zone is not None else _ZONE.get()
    if fmt is None:
        fmt = "%Y-%m-%dT%H:%M:%SZ" if local is None else "%Y-%m-%dT%H:%M:%S%z"
    if not isinstance(fmt, str):
        raise ValueError(f"a date format is text, not {_short(fmt)}")
    check_size(len(fmt) * 64)  # no directive writes more than a few dozen characters
    try:
        moment = parse_date(value)
        return (moment if local is None else moment.astimezone(local)).strftime(fmt)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"cannot format a date with {_short(fmt)} ({exc})") from exc


def _tojson(value: Any, indent: int | None = None) -> str:
    return dumps_pretty(value, indent=indent)


def _duration(unit: str) -> Callable[[Any], timedelta]:
    def duration(n: Any) -> timedelta:
        if not isinstance(n, (int, float)) or isinstance(n, bool):
            raise ValueError(f"{unit}() takes a number, not {_short(n)}")
        try:
            return timedelta(**{unit: n})
        except (OverflowError, ValueError) as exc:
            raise ValueError(f"{unit}({_short(n)}) is out of range ({exc})") from exc

    return duration


def _make_environment() -> Sandbox:
    env = Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
                  cache_size=0)
    env.globals.update(minutes=_duration("minutes"), hours=_duration("hours"),
                       days=_duration("days"), seconds=_duration("seconds"),
                       parse_date=parse_date)
    env.add_filters(format_date=_format_date, date=_format_date, tojson=_tojson,
                    parse_date=parse_date)
    return env


ENV = _make_environment()
