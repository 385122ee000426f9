"""The kinds of document, as a table: how each is declared, how it is built, and which
names its templates see. A new kind (a recurring event, a database trigger, a workflow
test) is a new row here and the functions it names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.compiler import backend, cases, data_types, option_sets, steps, units
from gateway.config.source import Document, DocumentKind
from gateway.runtime.context import REQUEST_NAME, RUN_NAMES

if TYPE_CHECKING:
    from gateway.compiler import Compiler


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of document. Kinds are declared in table order (settings, option sets and
    data types first, so that every later kind can refer to them), then built in the same
    order."""

    name: str
    declare: Callable[[Compiler, str, list[Document]], None]
    build: Callable[[Compiler, str, frozenset[str]], Mapping[str, Any]]
    names: frozenset[str] = frozenset()  # what its templates may refer to


KINDS: tuple[Kind, ...] = (
    Kind(DocumentKind.SETTINGS, data_types.declare_settings, data_types.build_nothing),
    Kind(DocumentKind.OPTION_SET, option_sets.declare_option_sets,
         option_sets.build_option_sets),
    Kind(DocumentKind.DATA_TYPE, data_types.declare_data_types, data_types.build_data_types),
    Kind(DocumentKind.CUSTOM_EVENT, units.declare_units, steps.build_units, RUN_NAMES),
    Kind(DocumentKind.API_WORKFLOW, units.declare_units, steps.build_units,
         RUN_NAMES | {REQUEST_NAME}),
    Kind(DocumentKind.RECURRING_EVENT, backend.declare, backend.build_recurring,
         RUN_NAMES | {"thing"}),
    Kind(DocumentKind.DATABASE_TRIGGER, backend.declare, backend.build_triggers,
         RUN_NAMES | {"before", "after"}),
    Kind(DocumentKind.WORKFLOW_TEST, cases.declare_nothing, cases.build_tests),
)
