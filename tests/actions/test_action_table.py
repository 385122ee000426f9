"""The declarations of the step actions against the schema, and what they tell the compiler."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from gateway.actions import ACTIONS
from gateway.actions.flow import log
from gateway.config import schema
from gateway.runtime.action_spec import Action, collect

_NOT_ACTIONS = {"step_id"}  # the definition of a step's `id`, not of an action


def disagreements(declared: Iterable[str], document: Mapping[str, Any]) -> list[str]:
    """Where the declared actions and the schema's three places for a step differ: the
    `action` enum, the if/then branch per action, and the `step_<action>` definition."""
    step = document["$defs"]["step"]
    enum = set(step["properties"]["action"]["enum"])
    branches = {b["if"]["properties"]["action"]["const"]: b["then"]["$ref"]
                for b in step["allOf"]}
    defined = {name.removeprefix("step_") for name in document["$defs"]
               if name.startswith("step_") and name not in _NOT_ACTIONS}
    names = set(declared)
    found = [f"{n}: not in the action enum" for n in sorted(names - enum)]
    found += [f"{n}: in the action enum, not declared" for n in sorted(enum - names)]
    found += [f"{n}: no if/then branch" for n in sorted(names - set(branches))]
    found += [f"{n}: a branch for an undeclared action" for n in sorted(set(branches) - names)]
    found += [f"{n}: no $defs/step_{n}" for n in sorted(names - defined)]
    found += [f"{n}: $defs/step_{n} for an undeclared action" for n in sorted(defined - names)]
    found += [f"{n}: its branch points to {ref}" for n, ref in sorted(branches.items())
              if ref != f"#/$defs/step_{n}"]
    return found


def test_every_action_is_declared_and_in_the_schema() -> None:
    assert disagreements(ACTIONS, schema.schema_document()) == []


def test_the_comparison_sees_an_action_missing_from_the_schema() -> None:
    assert disagreements([*ACTIONS, "send_fax"], schema.schema_document()) == [
        "send_fax: not in the action enum", "send_fax: no if/then branch",
        "send_fax: no $defs/step_send_fax"]


def test_the_comparison_sees_a_schema_step_nobody_declared() -> None:
    document = copy.deepcopy(schema.schema_document())
    document["$defs"]["step"]["properties"]["action"]["enum"].append("send_fax")
    assert disagreements(ACTIONS, document) == ["send_fax: in the action enum, not declared"]


def test_an_action_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'log' is declared twice"):
        collect((Action("log", log),), (Action("log", log),))


@pytest.mark.parametrize(("name", "waits", "writes"), [
    ("set", False, False), ("return_data", False, False), ("log", False, False),
    ("trigger_event", True, False), ("search", True, False), ("get_thing", True, False),
    ("create_thing", True, True), ("make_changes", True, True), ("delete_list", True, True),
])
def test_what_the_declarations_say(name: str, waits: bool, writes: bool) -> None:
    assert (ACTIONS[name].waits, ACTIONS[name].writes) == (waits, writes)


def test_the_run_log_note_of_an_empty_search() -> None:
    note = ACTIONS["search"].note
    assert note({"results": [], "count": 0}) == "the search came back empty"
    assert note({"results": [{}], "count": 1}) is None
    assert ACTIONS["log"].note(None) is None
