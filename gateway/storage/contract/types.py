"""What the storage contract speaks of: data type declarations, search terms, pages and
changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.storage.contract.options import OptionSet

SYSTEM_KEYS = frozenset({"_id", "created_at", "modified_at", "created_by"})
CONSTRAINTS = frozenset({
    "equals", "not_equal", "is_empty", "is_not_empty", "text_contains", "not_text_contains",
    "greater_than", "less_than", "in", "not_in", "contains", "not_contains",
    "geographic_search"})


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One declared field; `type` is a scalar type name, another data type's name or an
    option set's name (then `options` is that set)."""

    name: str
    type: str
    list: bool = False
    unique: bool = False
    indexed: bool = False
    default: Any = None
    options: OptionSet | None = None
    display: str | None = None  # the name Bubble shows (`First Name`), keying it on the wire
    private: bool = False  # a file or image field whose uploads are kept private

    @property
    def key(self) -> str:
        """The field's key where display keys are asked for: its display, or its name."""
        return self.display or self.name


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """A data type: its name and declared fields (records may hold undeclared keys too)."""

    name: str
    fields: Mapping[str, FieldSpec] = field(default_factory=dict)
    display: str | None = None  # the name Bubble shows (`Rental Unit`): its Data API URL

    def keyed(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """`record` with each declared field keyed by its display, where it has one (Bubble's
        "use field display for key names"); other keys as they are."""
        return {(spec.key if (spec := self.fields.get(k)) else k): v for k, v in record.items()}

    def field_keyed(self, key: str) -> str | None:
        """The name of the field whose display keys it as `key` (or that has no display and
        is named `key`), if any."""
        return next((name for name, spec in self.fields.items() if spec.key == key), None)


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


@dataclass(frozen=True, slots=True)
class Change:
    """What one write did to one record: `before` is None for a create, `after` for a delete.

    Both are read in the transaction of the write itself, so they are exactly the states the
    write went from and to (what database triggers are given).
    """

    type: str
    id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @property
    def record(self) -> dict[str, Any]:
        """The record after the change, or as it was before it was deleted."""
        record = self.after if self.after is not None else self.before
        assert record is not None, f"a change of {self.type} {self.id} with no record"
        return record
