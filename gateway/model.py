"""The compiled model: frozen, with every template compiled. Built by the compiler only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.settings import Settings
from gateway.storage.interface import TypeSpec
from gateway.templating import Compiled

if TYPE_CHECKING:
    from gateway.actions.context import RunContext

SCALAR_TYPES = ("text", "number", "integer", "boolean", "date", "object")

# An action, compiled: given the run context and the step's rendered arguments, its result.
Execute = Callable[["RunContext", dict[str, Any]], Awaitable[Any]]


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

    @property
    def is_record(self) -> bool:
        return self.type not in SCALAR_TYPES

    def describe(self) -> str:
        return f"list of {self.type}" if self.list else self.type


@dataclass(frozen=True, slots=True)
class Step:
    """One step, ready to run: its arguments compiled, its action bound."""

    index: int
    action: str
    execute: Execute
    args: Compiled
    id: str | None = None
    only_when: Compiled | None = None
    continue_on_error: bool = False
    location: str = ""


@dataclass(frozen=True, slots=True)
class Workflow:
    """An API workflow or a custom event (`kind` says which)."""

    kind: str
    name: str
    params: tuple[Param, ...]
    steps: tuple[Step, ...]
    label: str = ""
    expose: bool = False
    auth: str = "admin"
    method: str = "POST"
    ignore_privacy_rules: bool = False
    only_when: Compiled | None = None
    return_200_if_condition_fails: bool = False
    returns: tuple[Param, ...] = ()
    location: str = ""
    uses_request: bool = False  # a template reads `request`: the HTTP layer builds it
    may_wait: bool = True  # some step waits on something (a store, an event): time it out
    record_params: tuple[Param, ...] = ()  # parameters of a data type: loaded from the store
    coerce: Callable[[Mapping[str, Any]], dict[str, Any]] = dict


@dataclass(frozen=True, slots=True)
class Registry:
    """Everything one config compiles to. Immutable: a new config is a new registry."""

    workflows: Mapping[str, Workflow] = field(default_factory=dict)
    events: Mapping[str, Workflow] = field(default_factory=dict)
    data_types: Mapping[str, TypeSpec] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    files: tuple[str, ...] = ()

    def exposed(self) -> list[Workflow]:
        return sorted((w for w in self.workflows.values() if w.expose), key=lambda w: w.name)
