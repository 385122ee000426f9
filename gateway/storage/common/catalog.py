"""Which data types and indexes a store serves, and how a stored row reads as a record
(`Catalog`); which indexes to drop and create, which migrations are pending; and what the
records and users roles of both backends share."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from gateway.core.errors import DuplicateError, RecordNotFoundError, StorageError
from gateway.storage.common import codec, limits
from gateway.storage.common.limits import Increments
from gateway.storage.common.query import Dialect, IndexDef, index_definitions, literal
from gateway.storage.common.sql_files import Migration, migrations
from gateway.storage.contract import Change, TypeSpec

log = logging.getLogger("gateway.storage")

# A user's log-in follows the e-mail its record shows (each backend's `follow_email`).
USER = "user"
EMAIL_TAKEN = "another user already has this email"
EMAIL_NEEDED = ("a user who has a password logs in with its email: the email cannot be "
                "cleared")


class StoredRow(NamedTuple):
    """A row of `gateway_records` as the driver gave it, with `data` decoded and the
    timestamps as aware datetimes."""

    id: str
    type: str
    data: dict[str, Any]
    created_at: datetime
    modified_at: datetime
    created_by: str | None


class Catalog:
    """The data types a store was opened with, and the per-type indexes they declare."""

    def __init__(self) -> None:
        self.types: dict[str, TypeSpec] = {}
        self.indexes: dict[str, IndexDef] = {}

    def declare(self, dialect: Dialect, types: Sequence[TypeSpec]) -> list[IndexDef]:
        """Serve `types` from now on; returns the indexes they need."""
        defs = self.plan(dialect, types)
        self.types = {spec.name: spec for spec in types}
        self.indexes = {d.name: d for d in defs}
        return defs

    @staticmethod
    def plan(dialect: Dialect, types: Sequence[TypeSpec]) -> list[IndexDef]:
        """The indexes `types` need, nothing declared yet."""
        return [d for spec in types for d in index_definitions(dialect, spec)]

    def unique_fields(self, type: str) -> bool:
        """Whether a record of `type` may be refused for a value another one holds."""
        spec = self.types.get(type)
        return spec is not None and any(f.unique for f in spec.fields.values())

    def with_defaults(self, type: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The fields of a new record, its declared defaults added, checked storable."""
        data = codec.with_defaults(self.types.get(type), fields)
        limits.check_record(self.types.get(type), type, data)
        return data

    def changes(self, type: str, fields: Mapping[str, Any],
                increment: Mapping[str, Any] | None) -> Increments:
        """The `increment` of an update, checked with its `fields`: both storable, each
        amount a number, no field both set and incremented."""
        spec = self.types.get(type)
        limits.check_record(spec, type, fields)
        limits.check_record(spec, type, increment or {})
        return limits.increments(spec, type, fields, increment or {})

    def record(self, row: StoredRow) -> dict[str, Any]:
        data = codec.decode_fields(self.types.get(row.type), row.data)
        return {
            "_id": row.id,
            "_type": row.type,
            "created_at": row.created_at,
            "modified_at": row.modified_at,
            "created_by": row.created_by,
            **data,
        }

    def translate(self, exc: Exception, violated_index: str | None = None) -> StorageError:
        """The error to raise for a driver's `exc`; `violated_index` names the unique index
        it broke, if that is what happened."""
        found = self.indexes.get(violated_index) if violated_index else None
        if found is not None:
            return DuplicateError(
                f"another {found.type_name} already has this {found.field}",
                found.type_name,
                found.field,
            )
        return StorageError(f"database error: {exc}")


def index_changes(
    existing: Iterable[str], defs: Sequence[IndexDef]
) -> tuple[list[str], list[IndexDef]]:
    """(the indexes to drop, the indexes to create) to make `existing` match `defs`."""
    present = set(existing)
    declared = {d.name for d in defs}
    return sorted(present - declared), [d for d in defs if d.name not in present]


def create_index_sql(template: str, index: IndexDef) -> str:
    """A backend's `create_index` block filled in for `index`."""
    return template.format(
        unique="UNIQUE" if index.unique else "",
        name=index.name,
        expression=index.expression,
        type=literal(index.type_name),
    )


def pending_migrations(backend: str, applied: Iterable[str]) -> list[Migration]:
    """The backend's migrations not yet `applied`, in the order they must be applied."""
    done = set(applied)
    return [m for m in migrations(backend) if m.name not in done]


def the_change(changes: Sequence[Change], type: str, id: str) -> Change:
    """The one change of a single-record write; `RecordNotFoundError` when there was none."""
    if not changes:
        raise RecordNotFoundError(f"no {type} with id {id}")
    return changes[0]
