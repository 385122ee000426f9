"""What a step action is: everything the compiler and the interpreter need to know about
one, declared in one place beside its function (the families live in `gateway.actions`).

The compiler and the interpreter name no action themselves: they ask the declaration
whether its static check has something to say, whether a step of it can wait (so that the
run needs a timer), whether it writes records, whether its effect is outside the database
(checkpointed in jobs' runs), which custom event it calls and whether it ends the run with
a reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core import pointer as ptr
from gateway.core.errors import did_you_mean
from gateway.core.settings import Settings
from gateway.runtime.context import RunContext
from gateway.runtime.param import Param
from gateway.storage.contract import TypeSpec

Execute = Callable[[RunContext, dict[str, Any]], Awaitable[Any]]


class StepCheck(Protocol):
    """What an action's static check sees of the config at one step, and how it reports.

    Pointers are relative to the document; `base` is the step's own pointer."""

    @property
    def kind(self) -> str: ...  # the kind of document the step is in
    @property
    def base(self) -> str: ...
    @property
    def returns(self) -> tuple[Param, ...]: ...  # what the enclosing custom event declares
    @property
    def settings(self) -> Settings | None: ...  # None when its document failed the schema

    def error(self, pointer: str, code: str, message: str, *, key: bool = False) -> None: ...
    def data_type(self, name: str, pointer: str) -> TypeSpec | None:
        """The data type, or None after reporting it unknown (or when it failed the schema)."""
    def event_params(self, name: str, pointer: str) -> tuple[Param, ...] | None:
        """A custom event's parameters, or None after reporting it unknown."""
    def workflow_params(self, name: str, pointer: str) -> tuple[Param, ...] | None:
        """An API workflow's parameters, or None after reporting it unknown."""
    def recurring_type(self, name: str, pointer: str) -> str | None:
        """The data type of a per-record recurring event, or None after reporting it
        unknown (or not per record)."""
    def check_value(self, pointer: str, value: Any, type_name: str, is_list: bool) -> None:
        """Report a constant value that does not fit its declared type (templates pass)."""


Check = Callable[[StepCheck, Mapping[str, Any]], None]
# The keys of a step (its whole mapping, as written) in a form the action no longer takes,
# each with a sentence that says what to write instead.
OldForm = Callable[[Mapping[str, Any]], Iterable[tuple[str, str]]]


def _no_note(result: Any) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Action:
    """One step action, declared where its function lives."""

    name: str
    execute: Execute
    check: Check | None = None  # static checks of the step's arguments, at load time
    waits: bool = True  # it may wait on something (a store, an event): runs get a timer
    writes: bool = False  # it writes records (and reports each change to the run)
    # Its effect is outside the database (a call out, an e-mail), which no rollback undoes:
    # in a job's run it is checkpointed once it succeeds, and a retried run restores its
    # result rather than doing it again (see `gateway.runtime.checkpoints`).
    outbound: bool = False
    replies: bool = False  # it ends the run with a reply (the data a workflow returns)
    # Its result is the run's reply when no step returns data (Bubble's sign-up and log-in).
    replies_by_default: bool = False
    event_arg: str | None = None  # the argument naming a custom event it calls inline
    note: Callable[[Any], str | None] = _no_note  # what the run log says of a result
    old_form: OldForm | None = None  # keys it once took, said at load time with the new ones


def collect(*families: tuple[Action, ...]) -> dict[str, Action]:
    """The actions of every family by name; a name declared twice is a bug."""
    found: dict[str, Action] = {}
    for family in families:
        for action in family:
            if action.name in found:
                raise ValueError(f"the action {action.name!r} is declared twice")
            found[action.name] = action
    return found


def check_call_params(check: StepCheck, args: Mapping[str, Any], declared_params: Sequence[Param],
                      callee: str, codes: tuple[str, str],
                      given_elsewhere: str | None = None) -> None:
    """What a step that calls a workflow or an event gives it (`args["params"]`): its constant
    values are parameters the callee declares and fit their types, and every parameter it
    needs is there (or is `given_elsewhere`). `callee` names it in messages; `codes` are the
    diagnostics' codes for an unknown and for a missing parameter."""
    given = args.get("params") or {}
    if not isinstance(given, dict):
        return
    declared = {p.name: p for p in declared_params}
    for key, value in given.items():
        pointer = ptr.join(check.base, "params", key)
        if key not in declared:
            check.error(pointer, codes[0],
                        f"{callee} has no parameter '{key}'" + did_you_mean(key, declared),
                        key=True)
        else:
            check.check_value(pointer, value, declared[key].type, declared[key].list)
    for param in declared_params:
        if param.name not in given and param.name != given_elsewhere and not (
                param.optional or param.has_default):
            check.error(check.base + "/params" if "params" in args else check.base,
                        codes[1], f"{callee} needs the parameter '{param.name}'")
