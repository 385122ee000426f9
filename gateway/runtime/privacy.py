"""Privacy rules: what a caller may find and see of the records of a data type.

A record gets what every rule whose `when` holds for it grants (rules are ORed); a record no
rule grants anything gets `everyone_else`. Runs of admin keys and workflows with
`ignore_privacy_rules: true` are not subject to them. Hidden fields are absent from the
record, not null. `_id` and `_type` are always there; the other system fields
(`created_at`, `modified_at`, `created_by`) are shown only when the rules show them, as in
Bubble, where "Created By", "Created Date" and "Modified Date" are fields of the rules' lists.

A rule of the form `{{ thing.F == current_user._id }}` is `pushable`: a search can ask the
database for exactly the records it grants, so that paging and counts stay right and fast.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gateway.core.errors import TemplateError
from gateway.templates.templating import Compiled

ALWAYS_SHOWN = frozenset({"_id", "_type"})
# System fields a rule shows or hides like declared ones (`view_fields: [created_by]`).
HIDEABLE_SYSTEM_FIELDS = frozenset({"created_at", "modified_at", "created_by"})
ALL: frozenset[str] | None = None  # `view_fields: all`


@dataclass(frozen=True, slots=True)
class Grant:
    """What a caller may do with one record: find it, and see these fields (None: all);
    through the Data API, also create, modify or delete it."""

    find: bool
    view: frozenset[str] | None
    create: bool = False
    modify: bool = False
    delete: bool = False

    def sees(self, fields: frozenset[str]) -> bool:
        """Whether every one of `fields` is shown."""
        return self.view is None or fields <= self.view | ALWAYS_SHOWN

    def shown(self, record: Mapping[str, Any]) -> dict[str, Any]:
        if self.view is None:
            return dict(record)
        return {k: v for k, v in record.items() if k in self.view or k in ALWAYS_SHOWN}


NOTHING = Grant(False, frozenset())
EVERYTHING = Grant(True, ALL, True, True, True)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    when: Compiled
    grant: Grant
    pushable: str | None = None  # F, when the rule is `thing.F == current_user._id`


@dataclass(frozen=True, slots=True)
class Privacy:
    """The privacy rules of one data type, compiled."""

    type: str
    rules: tuple[Rule, ...] = ()
    everyone_else: Grant = NOTHING
    fields: frozenset[str] = frozenset()  # the declared fields: a missing one reads as empty

    def grant(self, record: Mapping[str, Any], user: Mapping[str, Any] | None) -> Grant:
        """What the caller (`user`, or None when anonymous) gets of `record`. A declared
        field the record never had is empty to the rules (`not thing.locked` holds), as in
        Bubble, rather than an error that makes the rule grant nothing."""
        if not self.fields <= record.keys():
            record = {**dict.fromkeys(self.fields), **record}
        scope = {"thing": record, "current_user": user}
        found: Grant | None = None
        for rule in self.rules:
            if _holds(rule, scope):
                found = rule.grant if found is None else _union(found, rule.grant)
        return self.everyone_else if found is None else found

    def search_field(self, using: frozenset[str] = frozenset()) -> str | None:
        """The field F of the one rule that decides what a search finds, when that can be
        asked of the database as `F equals the caller` (no other rule finds anything,
        everyone else finds nothing, and the rule shows every field in `using`, those the
        search constrains or sorts on); None when the rules must be applied record by
        record."""
        finders = [rule for rule in self.rules if rule.grant.find]
        if self.everyone_else.find or len(finders) != 1 or not finders[0].grant.sees(using):
            return None
        return finders[0].pushable


def _holds(rule: Rule, scope: Mapping[str, Any]) -> bool:
    # A rule that cannot be evaluated for this caller (`current_user._id` when anonymous)
    # grants nothing.
    try:
        return bool(rule.when(scope))
    except TemplateError:
        return False


def _union(a: Grant, b: Grant) -> Grant:
    view = None if a.view is None or b.view is None else a.view | b.view
    return Grant(a.find or b.find, view, a.create or b.create, a.modify or b.modify,
                 a.delete or b.delete)


class Scans:
    """Searches that judge privacy rules record by record: at most `at_once` of them at a
    time (the others wait their turn), each judging its records a chunk at a time on a
    worker thread, so that the event loop keeps answering meanwhile. The rules run as they
    do anywhere: compiled in the sandbox, within the run's template limits (a context
    variable, carried into the thread)."""

    def __init__(self, at_once: int = 2) -> None:
        self.at_once = at_once
        # Threads start on first use, and end when the scans are collected (a reload).
        self._threads = ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="privacy")
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                               asyncio.Semaphore] = weakref.WeakKeyDictionary()

    def turn(self) -> asyncio.Semaphore:
        """The gate of this event loop: hold it for the length of one search's scan."""
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Semaphore(self.at_once)
        return gate

    async def passing(self, viewer: Viewer, type: str, records: Sequence[Mapping[str, Any]],
                      using: frozenset[str]) -> list[str]:
        """`viewer.passing(...)`, on a worker thread."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, context.run, _passing, viewer, type, records, using)


    async def shown(self, viewer: Viewer, type: str, records: Sequence[dict[str, Any]],
                    using: frozenset[str]) -> list[dict[str, Any]]:
        """The records the caller finds and sees every field in `using` of, each cut to what
        it sees: a page of a few records on the event loop, a longer one on a worker thread
        (a search's page holds up to 10,000)."""
        if len(records) <= YIELD_EVERY:
            return _shown(viewer, type, records, using)
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, context.run, _shown, viewer, type, records, using)


YIELD_EVERY = 32  # records judged between two offers of the GIL to the event loop


def _passing(viewer: Viewer, type: str, records: Sequence[Mapping[str, Any]],
             using: frozenset[str]) -> list[str]:
    # The thread holds the GIL while it judges, and would keep the event loop waiting for
    # it up to the interpreter's switch interval (5 ms) each time the loop wants it back;
    # it lets go of it every few records instead (`sleep(0)` releases it).
    passed: list[str] = []
    for start in range(0, len(records), YIELD_EVERY):
        passed += viewer.passing(type, records[start:start + YIELD_EVERY], using)
        time.sleep(0)
    return passed


def _shown(viewer: Viewer, type: str, records: Sequence[dict[str, Any]],
           using: frozenset[str]) -> list[dict[str, Any]]:
    shown: list[dict[str, Any]] = []
    for start in range(0, len(records), YIELD_EVERY):
        shown += [viewer.cut(type, r, g) for r in records[start:start + YIELD_EVERY]
                  if (g := viewer.finds(type, r, using)) is not None]
        if start + YIELD_EVERY < len(records):
            time.sleep(0)  # the GIL offered to the event loop, as `_passing` does
    return shown


SCANS = Scans()  # for viewers made without an interpreter's own


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks at records in one run: the privacy rules that apply to them (none for admin
    keys and workflows that ignore privacy rules), and the caller's user record.

    A record already cut to what the caller sees is remembered (by identity, for the run),
    so that cutting what the run returns does not judge it again on the fields it lost. It
    is kept alive as long as the viewer: were it freed, another record (a full one) could
    get its id, and go out uncut."""

    privacy: Mapping[str, Privacy]
    user: Mapping[str, Any] | None = None
    scans: Scans = SCANS  # where searches judge records one by one
    _cut: dict[int, dict[str, Any]] = field(default_factory=dict)

    def of(self, type: str) -> Privacy | None:
        return self.privacy.get(type)

    def grant(self, type: str, record: Mapping[str, Any]) -> Grant:
        privacy = self.privacy.get(type)
        return EVERYTHING if privacy is None else privacy.grant(record, self.user)

    def cut(self, type: str, record: dict[str, Any],
            grant: Grant | None = None) -> dict[str, Any]:
        """The record with only the fields the caller sees."""
        if type not in self.privacy:
            return record
        shown = (grant or self.grant(type, record)).shown(record)
        self._cut[id(shown)] = shown
        return shown

    def finds(self, type: str, record: Mapping[str, Any],
              using: frozenset[str] = frozenset()) -> Grant | None:
        """What the caller gets of the record, or None when the caller may not find it, or
        may not see one of the fields in `using` (those a search constrains or sorts on: a
        match on a hidden field would tell its value)."""
        grant = self.grant(type, record)
        return grant if grant.find and grant.sees(using) else None

    def passing(self, type: str, records: Sequence[Mapping[str, Any]],
                using: frozenset[str]) -> list[str]:
        """The ids of `records` that the caller finds and sees every field in `using` of."""
        return [r["_id"] for r in records if self.finds(type, r, using) is not None]

    def sift(self, type: str, record: dict[str, Any] | None) -> dict[str, Any] | None:
        """The record as the caller may see it; None when the caller may not find it."""
        if record is None or type not in self.privacy:
            return record
        grant = self.finds(type, record)
        return None if grant is None else self.cut(type, record, grant)

    def shown(self, value: Any, depth: int = 0) -> Any:
        """What a run returns, with every record in it cut to the fields the caller sees."""
        if depth > 64 or not self.privacy or id(value) in self._cut:
            return value
        if isinstance(value, list):
            return [self.shown(item, depth + 1) for item in value]
        if not isinstance(value, dict):
            return value
        kind = value.get("_type")
        if isinstance(kind, str) and kind in self.privacy and "_id" in value:
            return self.cut(kind, value)
        return {key: self.shown(item, depth + 1) for key, item in value.items()}


EXEMPT = Viewer({})  # sees everything
