"""The write seam: every record a run writes is reported to the run, collected per record
(first before, last after), and handed to the run's commit, on SQLite and PostgreSQL."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from gateway.compiler.loader import load
from gateway.runtime.context import Changes, RunContext
from gateway.runtime.interpreter import Interpreter, RunResult
from gateway.runtime.model import Registry
from gateway.storage import Storage, open_storage
from gateway.storage.contract import Change

CONFIG = """
kind: data_type
name: lead
fields:
  name: {type: text}
  score: {type: number, default: 0}
---
kind: custom_event
name: bump
params: {lead: {type: text}}
steps:
  - action: make_changes
    type: lead
    thing: "{{ params.lead }}"
    fields: {score: 3}
---
kind: api_workflow
name: busy
auth: none
params:
  keep: {type: text}
  drop: {type: text}
  fail: {type: boolean, optional: true, default: false}
steps:
  - id: new
    action: create_thing
    type: lead
    fields: {name: fresh}
  - action: make_changes
    type: lead
    thing: "{{ steps.new }}"
    fields: {score: 1}
  - action: make_changes
    type: lead
    thing: "{{ params.keep }}"
    fields: {score: 2}
  - action: trigger_event
    event: bump
    params: {lead: "{{ params.keep }}"}
  - action: delete_thing
    type: lead
    thing: "{{ params.drop }}"
  - id: ghost
    action: create_thing
    type: lead
    fields: {name: ghost}
  - action: delete_thing
    type: lead
    thing: "{{ steps.ghost }}"
  - action: fail
    only_when: "{{ params.fail }}"
    message: "no"
"""


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(CONFIG).strip())
    return load([path])


def _change(type: str, id: str, before: Any, after: Any) -> Change:
    return Change(type, id, before, after)


def test_changes_keep_the_first_before_and_the_last_after() -> None:
    changes = Changes()
    changes.add(_change("lead", "1", {"n": 0}, {"n": 1}))
    changes.add(_change("lead", "1", {"n": 1}, {"n": 2}), _change("lead", "2", None, {"n": 9}))
    changes.add(_change("lead", "3", None, {"n": 5}))
    changes.add(_change("lead", "3", {"n": 5}, None))  # created and deleted: nothing to see
    assert [(c.id, c.before, c.after) for c in changes] == [
        ("1", {"n": 0}, {"n": 2}), ("2", None, {"n": 9})]
    assert len(changes) == 2 and changes


def test_no_changes_is_false() -> None:
    assert not Changes() and list(Changes()) == []


async def _seeded(storage: Storage) -> tuple[str, str]:
    keep = await storage.records.create("lead", {"name": "keep"})
    drop = await storage.records.create("lead", {"name": "drop"})
    return keep.id, drop.id


async def run_busy(registry: Registry, storage_url: str,
                   **params: Any) -> tuple[RunResult, list[RunContext], str]:
    """Run `busy` on a fresh store with a commit hook; what it returned, what the hook got,
    and the id of the record it deletes."""
    storage = open_storage(storage_url)
    await storage.open(list(registry.data_types.values()))
    committed: list[RunContext] = []

    async def hook(ctx: RunContext) -> None:
        committed.append(ctx)

    try:
        keep, drop = await _seeded(storage)
        interpreter = Interpreter(registry, storage, on_commit=[hook])
        result = await interpreter.run(registry.workflows["busy"],
                                       {"keep": keep, "drop": drop, **params})
    finally:
        await storage.close()
    return result, committed, drop


async def test_the_commit_gets_each_changed_record_once(registry: Registry,
                                                         storage_url: str) -> None:
    result, committed, drop = await run_busy(registry, storage_url)
    assert result.error is None, result.error
    assert len(committed) == 1
    seen = {(c.before or {}).get("name") or c.after["name"]: c for c in committed[0].changes}
    assert set(seen) == {"fresh", "keep", "drop"}  # the ghost came and went
    fresh, kept, dropped = seen["fresh"], seen["keep"], seen["drop"]
    assert fresh.before is None and fresh.after is not None and fresh.after["score"] == 1
    assert kept.before is not None and kept.after is not None
    assert (kept.before["score"], kept.after["score"]) == (0, 3)  # the event's change is last
    assert dropped.id == drop and dropped.before is not None and dropped.after is None


async def test_a_failed_run_commits_nothing(registry: Registry, storage_url: str) -> None:
    result, committed, _ = await run_busy(registry, storage_url, fail=True)
    assert result.error is not None and result.error.code == "FAILED"
    assert committed == []
