"""The records role: `RecordStore`, records of the declared data types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from gateway.storage.contract.types import Change, Constraint, Page, SortKey


class RecordStore(Protocol):
    """Records of the declared data types: writes report their `Change`s.

    A value neither backend can hold faithfully (NUL or invalid Unicode in text, an integer
    beyond 64 bits, nesting past `limits.MAX_DEPTH`, an indexed text past
    `limits.MAX_INDEXED_TEXT_BYTES`) is refused with `ValidationError` on both; an id no
    record can have is simply not found. A database that cannot be reached or written
    raises `StorageUnavailableError`.

    A write's `at` is its time: a record's Created Date (and id) and Modified Date. A run
    gives its clock's (the interpreter's), so that a record's dates are the run's time;
    None is the wall clock's now."""

    async def create(
        self, type: str, fields: Mapping[str, Any], created_by: str | None = None, *,
        at: datetime | None = None,
    ) -> Change: ...
    async def get(self, type: str, id: str) -> dict[str, Any] | None: ...
    # Raises RecordNotFoundError when there is no such record. `increment` adds an amount to
    # number fields ({field: amount}) in the write itself, from the record's latest value,
    # so concurrent increments never lose one another (a missing value counts as 0).
    async def update(self, type: str, id: str, fields: Mapping[str, Any],
                     increment: Mapping[str, Any] | None = None, *,
                     at: datetime | None = None) -> Change: ...
    # Missing ids are skipped; the changes come in the order of `ids`.
    async def update_many(
        self, type: str, ids: Sequence[str], fields: Mapping[str, Any],
        increment: Mapping[str, Any] | None = None, *, at: datetime | None = None,
    ) -> list[Change]: ...
    # None when there was no such record.
    async def delete(self, type: str, id: str) -> Change | None: ...
    async def delete_many(self, type: str, ids: Sequence[str]) -> list[Change]: ...
    async def search(
        self,
        type: str,
        constraints: Sequence[Constraint] = (),
        sort: Sequence[SortKey] = (),
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page: ...
