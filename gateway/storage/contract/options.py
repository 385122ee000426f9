"""Option sets: fixed lists of options, each a stable value, a display and typed attributes.

An option is text: it compares, is stored and is written out as its value, so that a
record keeps what does not change when a display is renamed, and a template compares it
with plain text (`params.status == 'open'`). Templates read `.value`, `.display` and the
set's attributes on it (`params.status.color`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# How many options a message lists before it says how many more there are.
SHOWN_OPTIONS = 5


class Option(str):
    """One option: text equal to its value, with `value`, `display` and the set's
    attributes as attributes (read by templates; an attribute that names a text method,
    such as `title`, hides that method on the option)."""

    value: str
    display: str

    def __new__(cls, value: str, display: str, attributes: Mapping[str, Any]) -> Option:
        option = super().__new__(cls, value)
        option.__dict__.update(attributes)
        option.value = value
        option.display = display
        return option

    def __getnewargs__(self) -> tuple[str, str, Mapping[str, Any]]:  # type: ignore[override]
        return str(self), self.display, {}

    def __repr__(self) -> str:
        return f"Option({str(self)!r}, display={self.display!r})"


@dataclass(frozen=True, slots=True)
class OptionSet:
    """A declared option set: its options in order and its attributes' types."""

    name: str
    options: tuple[Option, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)
    by_value: Mapping[str, Option] = field(default_factory=dict)
    by_display: Mapping[str, Option] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, options: tuple[Option, ...],
           attributes: Mapping[str, str]) -> OptionSet:
        by_value: dict[str, Option] = {}
        by_display: dict[str, Option] = {}
        for option in options:
            by_value.setdefault(option.value, option)
            by_display.setdefault(option.display, option)
        return cls(name, options, dict(attributes), by_value, by_display)

    def find(self, value: Any) -> Option:
        """The option whose value is `value`, or else whose display is (the Data API and
        Bubble's callers send displays); `ValueError` when none is."""
        if isinstance(value, str):
            found = self.by_value.get(value) or self.by_display.get(value)
            if found is not None:
                return found
        raise ValueError(f"not an option of {self.name}")

    def find_all(self, values: Any) -> list[Option]:
        """A list of options, each at most once (so never longer than the set: a huge
        list is refused before any item is looked up); `ValueError` otherwise."""
        if not isinstance(values, list) or len(values) > len(self.options):
            raise ValueError(f"not a list of options of {self.name}")
        found = [self.find(value) for value in values]
        if len(set(found)) != len(found):
            raise ValueError(f"an option of {self.name} is listed twice")
        return found

    def stored(self, value: Any) -> Any:
        """A stored value as its option; one that is no longer an option stays as it is."""
        if isinstance(value, list):
            return [self.stored(item) for item in value]
        return self.by_value.get(value, value) if isinstance(value, str) else value

    def describe(self, is_list: bool = False) -> str:
        values = [option.value for option in self.options[:SHOWN_OPTIONS]]
        more = len(self.options) - len(values)
        listed = ", ".join(values) + (f" and {more} more" if more > 0 else "")
        if is_list:
            return f"a list of options of the option set {self.name}, each once: {listed}"
        return f"an option of the option set {self.name}: {listed}"
