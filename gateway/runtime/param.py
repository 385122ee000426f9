"""A declared parameter (of a workflow, a custom event, or what an event returns)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.storage.contract import OptionSet

SCALAR_TYPES = ("text", "number", "integer", "boolean", "date", "object", "geographic_address",
                "file", "image")
FILE_TYPES = frozenset({"file", "image"})


@dataclass(frozen=True, slots=True)
class Param:
    """A declared parameter of a workflow or custom event."""

    name: str
    type: str
    list: bool = False
    optional: bool = False
    default: Any = None
    has_default: bool = False
    in_query: bool = False
    options: OptionSet | None = None  # its type is this option set
    private: bool = False  # a file or image kept private (served through signed links)
    traced: bool = False  # its value is an attribute of the run's span (`trace: true`)

    @property
    def is_file(self) -> bool:
        return self.type in FILE_TYPES

    @property
    def is_record(self) -> bool:
        return self.options is None and self.type not in SCALAR_TYPES

    def describe(self) -> str:
        if self.options is not None:
            return self.options.describe(self.list)
        return f"list of {self.type}" if self.list else self.type
