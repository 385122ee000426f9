"""What the list pages share: a page's length, a filter's bound, and the position a page
of runs or jobs continues from."""

from __future__ import annotations

from datetime import datetime

from gateway.core.encoding import iso, parse_iso
from gateway.storage.contract import Position

PAGE = 50  # runs or jobs per page
MAX_FILTER = 200  # characters of a filter's value


def position(text: str) -> Position:
    """A list's place from its text (`<ISO time>|<id>`); ValueError if it is none."""
    when, bar, id = text.partition("|")
    if not bar or not id or len(id) > MAX_FILTER:
        raise ValueError(text)
    return parse_iso(when), id


def position_text(moment: datetime, id: str) -> str:
    return f"{iso(moment)}|{id}"
