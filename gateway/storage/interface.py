"""The storage contract: data type declarations, search terms, and the `Storage` protocol.

Both backends (SQLite and PostgreSQL) implement `Storage`; one contract test suite runs
against both, so callers never need to know which one they talk to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

SYSTEM_KEYS = frozenset({"_id", "created_at", "modified_at", "created_by"})
CONSTRAINTS = frozenset(
    {
        "equals",
        "not_equal",
        "is_empty",
        "is_not_empty",
        "text_contains",
        "greater_than",
        "less_than",
        "in",
        "not_in",
        "contains",
        "not_contains",
    }
)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One declared field; `type` is a scalar type name or another data type's name."""

    name: str
    type: str
    list: bool = False
    unique: bool = False
    indexed: bool = False
    default: Any = None


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """A data type: its name and declared fields (records may hold undeclared keys too)."""

    name: str
    fields: Mapping[str, FieldSpec] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Constraint:
    """One search condition: `key` is a field name or one of `SYSTEM_KEYS`."""

    key: str
    constraint: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class SortKey:
    key: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    """One page of search results.

    `count` is the total number of matching records, `remaining` how many come after this
    page, and `cursor` an opaque string that fetches the next page (None on the last one).
    """

    results: list[dict[str, Any]]
    count: int
    remaining: int
    cursor: str | None


class Storage(Protocol):
    """The async storage interface shared by every backend."""

    url: str
    # The migrations the last `open()` applied (empty when the schema was up to date).
    migrations_applied: list[str]

    # Connect and migrate; with `sync_indexes`, also make the per-type indexes match `types`
    # (creating the missing, dropping the undeclared). Tools that only read leave them be.
    async def open(self, types: Sequence[TypeSpec] = (), *, sync_indexes: bool = True) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> list[str]: ...

    async def create(
        self, type: str, fields: Mapping[str, Any], created_by: str | None = None
    ) -> dict[str, Any]: ...
    async def get(self, type: str, id: str) -> dict[str, Any] | None: ...
    async def update(self, type: str, id: str, fields: Mapping[str, Any]) -> dict[str, Any]: ...
    async def update_many(
        self, type: str, ids: Sequence[str], fields: Mapping[str, Any]
    ) -> list[dict[str, Any]]: ...
    async def delete(self, type: str, id: str) -> bool: ...
    async def delete_many(self, type: str, ids: Sequence[str]) -> int: ...
    async def search(
        self,
        type: str,
        constraints: Sequence[Constraint] = (),
        sort: Sequence[SortKey] = (),
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page: ...

    def record_run(self, run: Mapping[str, Any]) -> None: ...
    async def flush_runs(self) -> None: ...
    async def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]: ...
    async def get_run(self, id: str) -> dict[str, Any] | None: ...
    async def purge_runs(self, now: datetime, keep: timedelta, keep_failed: timedelta) -> int: ...
