"""The built-in database: one async `Storage` interface, split by role, and two backends.

A backend is its lifecycle (`open`, `migrate`, `ping`, `close`) plus one attribute per
role: `storage.records` (a `RecordStore`) and `storage.runs` (a `RunLog`).

`open_storage(url)` picks the backend from the URL scheme and imports its module only
then, so the PostgreSQL driver is loaded only by those who use PostgreSQL:

    sqlite:///relative/path.db    sqlite:////absolute/path.db    postgresql://user@host/db
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

from gateway.core.errors import StorageError
from gateway.storage.contract import (
    JOB_STATUSES,
    Change,
    Constraint,
    FieldSpec,
    Job,
    JobEnd,
    JobStore,
    Lifecycle,
    Page,
    RecordStore,
    RunLog,
    RunLogLimits,
    SortKey,
    Storage,
    TypeSpec,
)

__all__ = [
    "JOB_STATUSES",
    "Change",
    "Constraint",
    "FieldSpec",
    "Job",
    "JobEnd",
    "JobStore",
    "Lifecycle",
    "Page",
    "RecordStore",
    "RunLog",
    "RunLogLimits",
    "SortKey",
    "Storage",
    "TypeSpec",
    "open_storage",
]

if TYPE_CHECKING:  # so that mypy checks each backend against the protocols of every role
    from gateway.storage.postgresql.storage import PostgresStorage
    from gateway.storage.sqlite.storage import SqliteStorage

    _IMPLEMENTATIONS: tuple[type[Storage], ...] = (SqliteStorage, PostgresStorage)

_BACKENDS = {
    "sqlite": ("gateway.storage.sqlite.storage", "SqliteStorage"),
    "postgresql": ("gateway.storage.postgresql.storage", "PostgresStorage"),
    "postgres": ("gateway.storage.postgresql.storage", "PostgresStorage"),
}


def open_storage(url: str) -> Storage:
    """A storage for `url`, not yet opened: call `await storage.open(types)` next."""
    scheme = url.partition(":")[0].lower()
    if scheme not in _BACKENDS:
        raise StorageError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")
    module_name, class_name = _BACKENDS[scheme]
    backend = getattr(importlib.import_module(module_name), class_name)
    return cast(Storage, backend(url))
