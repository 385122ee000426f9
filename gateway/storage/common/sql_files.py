"""Loading SQL from the `.sql` files packaged beside each backend.

`queries.sql` holds named blocks (`-- name: create_record`) looked up by name; numbered
files (`0001_initial.sql`, …) are the migrations, applied in order and recorded in the
`gateway_migrations` table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

_NAME_LINE = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    sql: str


def _directory(backend: str) -> Traversable:
    return resources.files(f"gateway.storage.{backend}").joinpath("sql")


@cache
def queries(backend: str) -> dict[str, str]:
    """Every named block of the backend's `queries.sql`, by name."""
    text = _directory(backend).joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _NAME_LINE.split(text)
    # split() yields [preamble, name1, body1, name2, body2, ...]
    blocks = {
        name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2], strict=True)
    }
    if len(blocks) != len(parts[1::2]):
        raise ValueError(f"duplicate query name in {backend}/queries.sql")
    return blocks


@cache
def migrations(backend: str) -> tuple[Migration, ...]:
    """The backend's migrations, in the order they must be applied."""
    files = [f for f in _directory(backend).iterdir() if _MIGRATION.match(f.name)]
    return tuple(
        Migration(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8"))
        for f in sorted(files, key=lambda f: f.name)
    )
