"""Workflows and events built: their steps, every template in them compiled, and what each
template refers to checked against what is in scope there. Each action's own static check
runs through its declaration, at a `Site` that knows where the step is."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateSyntaxError

from gateway.actions import ACTIONS
from gateway.compiler.data_types import check_value
from gateway.compiler.option_sets import check_attributes
from gateway.compiler.run_options import error_redirect_of, flow_of, timezone_of
from gateway.compiler.shapes import reply_shapes
from gateway.compiler.units import Unit
from gateway.compiler.webhook_specs import build_hooks
from gateway.config.source import DocumentKind
from gateway.core.errors import did_you_mean
from gateway.core.settings import Settings, parse_duration
from gateway.runtime.coercion import compile_coercer
from gateway.runtime.model import Retry, Step, Workflow
from gateway.runtime.param import Param
from gateway.storage.contract import TypeSpec
from gateway.templates import templating
from gateway.templates.templating import Compiled

if TYPE_CHECKING:
    from gateway.compiler import Compiler

STEP_KEYS = frozenset({"id", "action", "only_when", "on_error", "description"})


@dataclass(slots=True)
class Site:
    """One place in a unit: what its templates may refer to, and (as the `StepCheck` an
    action's check gets) how to report a problem there."""

    compiler: Compiler
    unit: Unit
    names: frozenset[str]
    params: Mapping[str, Param]
    step_ids: frozenset[str] = frozenset()
    later_ids: frozenset[str] = frozenset()
    own_id: str | None = None
    base: str = ""
    user_checked: bool = False  # a condition over the templates here tests current_user

    @property
    def kind(self) -> str:
        return self.unit.kind

    @property
    def returns(self) -> tuple[Param, ...]:
        return self.unit.returns

    @property
    def settings(self) -> Settings | None:
        broken = self.compiler.is_broken(DocumentKind.SETTINGS, "")
        return None if broken else self.compiler.settings

    def error(self, pointer: str, code: str, message: str, *, key: bool = False) -> None:
        self.compiler.error(self.unit.doc, pointer, code, message, key=key)

    def data_type(self, name: str, pointer: str) -> TypeSpec | None:
        spec = self.compiler.data_types.get(name)
        if spec is None and not self.compiler.is_broken(DocumentKind.DATA_TYPE, name):
            self.error(pointer, "ref.unknown-type", f"unknown data type '{name}'"
                       + did_you_mean(name, self.compiler.data_types))
        return spec

    def event_params(self, name: str, pointer: str) -> tuple[Param, ...] | None:
        event = self.compiler.units.get((DocumentKind.CUSTOM_EVENT, name))
        if event is None and not self.compiler.is_broken(DocumentKind.CUSTOM_EVENT, name):
            events = [n for k, n in self.compiler.units if k == DocumentKind.CUSTOM_EVENT]
            self.error(pointer, "ref.unknown-event",
                       f"unknown custom event '{name}'" + did_you_mean(name, events))
        return None if event is None else event.params

    def workflow_params(self, name: str, pointer: str) -> tuple[Param, ...] | None:
        workflow = self.compiler.units.get((DocumentKind.API_WORKFLOW, name))
        if workflow is None and not self.compiler.is_broken(DocumentKind.API_WORKFLOW, name):
            known = [n for k, n in self.compiler.units if k == DocumentKind.API_WORKFLOW]
            self.error(pointer, "ref.unknown-workflow",
                       f"unknown API workflow '{name}'" + did_you_mean(name, known))
        return None if workflow is None else workflow.params

    def recurring_type(self, name: str, pointer: str) -> str | None:
        event = self.compiler.units.get((DocumentKind.RECURRING_EVENT, name))
        if event is None and not self.compiler.is_broken(DocumentKind.RECURRING_EVENT, name):
            known = [n for k, n in self.compiler.units if k == DocumentKind.RECURRING_EVENT]
            self.error(pointer, "ref.unknown-recurring-event",
                       f"unknown recurring event '{name}'" + did_you_mean(name, known))
        elif event is not None and "type" not in event.doc.data:
            self.error(pointer, "ref.unknown-recurring-event",
                       f"the recurring event '{name}' runs on a schedule of its own (cron or "
                       "every), not per record: give it a `type` to set it per record")
        return None if event is None else event.doc.data.get("type")

    def check_value(self, pointer: str, value: Any, type_name: str, is_list: bool) -> None:
        check_value(self.compiler, self.unit.doc, pointer, value, type_name, is_list)

    def leaf_with(self, names: frozenset[str], pointer: str, text: str) -> Compiled:
        """A template of this unit that may read only `names` (a hook's)."""
        return leaf(replace(self, names=names), pointer, text)


def build_units(c: Compiler, kind: str, names: frozenset[str]) -> Mapping[str, Any]:
    for unit in c.shadowed:
        if unit.kind == kind:
            _workflow(c, names, unit.doc.data["name"], unit)  # for its problems only
    return {name: _workflow(c, names, name, unit)
            for (unit_kind, name), unit in c.units.items() if unit_kind == kind}


def _workflow(c: Compiler, names: frozenset[str], name: str, unit: Unit) -> Workflow:
    doc, data = unit.doc, unit.doc.data
    _check_returns(c, unit)
    _check_access(c, unit)
    params = {p.name: p for p in unit.params}
    top = Site(c, unit, names, params, user_checked=_tests_user(data.get("only_when")))
    only_when = condition(top, "/only_when", data.get("only_when"))
    steps = _steps(c, names, unit, params, top.user_checked)
    hooks = build_hooks(top, data) if unit.kind == DocumentKind.API_WORKFLOW else None
    zone, error_redirect = timezone_of(top, data), error_redirect_of(top, data)
    return Workflow(
        kind=unit.kind, name=name, params=unit.params, steps=steps, label=data.get("label", ""),
        expose=data.get("expose", False), auth=data.get("auth", "admin"),
        method=data.get("method", "POST"),
        ignore_privacy_rules=data.get("ignore_privacy_rules", False), only_when=only_when,
        return_200_if_condition_fails=data.get("return_200_if_condition_fails", False),
        returns=unit.returns, location=f"{doc.file}:{doc.locate('')[0]}",
        uses_request=unit.reads_request,
        may_wait=any(step.action.waits for step in steps),
        writes=any(step.action.writes for step in steps),
        record_params=tuple(p for p in unit.params if p.is_record),
        file_params=tuple(p for p in unit.params if p.is_file),
        coerce=compile_coercer(name, unit.params), hooks=hooks,
        retry=retry_of(data.get("retry")), replies=reply_shapes(c, unit),
        version=definition_version(data), timezone=zone, error_redirect=error_redirect,
        flow=flow_of(top, data))


def definition_version(data: Mapping[str, Any]) -> str:
    """A document's version: a hash of what it says (12 hex digits), whatever its file's
    layout and whatever the other documents say."""
    text = json.dumps(data, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _check_returns(c: Compiler, unit: Unit) -> None:
    """A custom event that declares returns gives them back however its run goes: a caller
    that reads the returns of a run that returned nothing fails (a 500)."""
    if not any(not p.optional for p in unit.returns) or unit.doc.broken:
        return  # a broken step may be the one that returns
    steps = unit.doc.data.get("steps", [])
    replies = [(i, s) for i, s in enumerate(steps) if ACTIONS[s["action"]].replies]
    if not replies:
        c.error(unit.doc, "/returns", "event.bad-return",
                "this custom event declares returns but has no return_data step")
    elif not any(_always(step.get("only_when")) for _, step in replies):
        pointer = f"/steps/{replies[-1][0]}/only_when"
        if len(replies) == 1:
            c.error(unit.doc, pointer, "event.bad-return",
                    "the only return_data step of this custom event has a condition: when it "
                    "is false the event returns nothing, and a caller reading its returns "
                    "fails; end the event with a return_data step that has no only_when")
        else:
            c.warn(unit.doc, pointer, "event.conditional-return",
                   "every return_data step of this custom event has a condition: when none "
                   "holds the event returns nothing, and a caller reading its returns fails; "
                   "end the event with a return_data step that has no only_when")


def _always(condition: Any) -> bool:
    """Whether a step's `only_when` always holds (none, or a constant that is true)."""
    if isinstance(condition, str):
        return bool(condition) and not templating.is_template(condition)
    return condition is None or bool(condition)


def retry_of(data: Mapping[str, Any] | None) -> Retry:
    if not data:
        return Retry()
    return Retry(data.get("max_attempts", 1), parse_duration(data.get("backoff", "10s")),
                 parse_duration(data.get("max_backoff", "1h")))


def build_workflow(c: Compiler, names: frozenset[str], name: str, unit: Unit) -> Workflow:
    """The steps of another kind of document (a recurring event, a trigger) as a workflow."""
    return _workflow(c, names, name, unit)


def _check_access(c: Compiler, unit: Unit) -> None:
    data = unit.doc.data
    if (unit.kind == DocumentKind.API_WORKFLOW and data.get("auth", "admin") == "none"
            and data.get("ignore_privacy_rules") and not data.get("allow_public_privileged")):
        c.error(unit.doc, "/ignore_privacy_rules", "access.public-privileged",
                "anyone may call this workflow (auth: none) and it sees every record "
                "(ignore_privacy_rules); say allow_public_privileged: true if that is meant")


def _check_privileged_step(site: Site, data: Mapping[str, Any]) -> None:
    """A step's `ignore_privacy_rules: true` (schedule_workflow, trigger_event) follows the
    rule for workflows: not in a public workflow unless it says `allow_public_privileged`,
    and not in a custom event, which runs for whoever triggers it (the caller decides)."""
    if data.get("ignore_privacy_rules") is not True:
        return
    doc = site.unit.doc.data
    pointer = site.base + "/ignore_privacy_rules"
    if site.kind == DocumentKind.CUSTOM_EVENT:
        site.error(pointer, "access.public-privileged",
                   "a custom event runs for whoever triggers it: say ignore_privacy_rules on "
                   "the step of the workflow that triggers or schedules it instead")
    elif (site.kind == DocumentKind.API_WORKFLOW and doc.get("auth", "admin") == "none"
            and not doc.get("allow_public_privileged")):
        site.error(pointer, "access.public-privileged",
                   "anyone may call this workflow (auth: none) and this step would see every "
                   "record (ignore_privacy_rules); say allow_public_privileged: true on the "
                   "workflow if that is meant")


def _tests_user(value: Any) -> bool:
    """Whether a condition tests `current_user` itself (so the templates under it may read
    its fields)."""
    if not isinstance(value, str) or not templating.is_template(value):
        return False
    try:
        return templating.tests_name(templating.parse(value), "current_user")
    except TemplateSyntaxError:
        return False


def _steps(c: Compiler, names: frozenset[str], unit: Unit, params: Mapping[str, Param],
           user_checked: bool = False) -> tuple[Step, ...]:
    raw_steps = unit.doc.data.get("steps", [])
    all_ids = {s["id"] for s in raw_steps if isinstance(s, dict) and isinstance(s.get("id"), str)}
    seen: set[str] = set()
    steps = []
    for index, data in enumerate(raw_steps):
        base = f"/steps/{index}"
        step_id = data.get("id") if isinstance(data, dict) else None
        if base in unit.doc.broken:  # failed the schema: said there; its id still counts
            if isinstance(step_id, str):
                seen.add(step_id)
            continue
        site = Site(c, unit, names, params, frozenset(seen), frozenset(all_ids - seen),
                    step_id, base, user_checked or _tests_user(data.get("only_when")))
        steps.append(_step(site, index, data))
        if step_id in seen:
            site.error(base + "/id", "step.duplicate-id",
                       f"another step already has the id '{step_id}'")
        if step_id:
            seen.add(step_id)
    return tuple(steps)


def _step(site: Site, index: int, data: Mapping[str, Any]) -> Step:
    action = ACTIONS[data["action"]]
    args = {key: value for key, value in data.items() if key not in STEP_KEYS}
    compiled = templating.compile_tree(args, lambda text, p: leaf(site, site.base + p, text))
    if action.check is not None:
        action.check(site, args)
    _check_privileged_step(site, data)
    line = site.unit.doc.locate(site.base)[0]
    return Step(index=index, action=action, args=compiled, id=data.get("id"),
                only_when=condition(site, site.base + "/only_when", data.get("only_when")),
                continue_on_error=data.get("on_error") == "continue",
                location=f"{site.unit.doc.file}:{line}")


def condition(site: Site, pointer: str, value: Any) -> Compiled | None:
    if value is None:
        return None
    if isinstance(value, str):
        return leaf(site, pointer, value)
    return templating.constant(bool(value))


def leaf(site: Site, pointer: str, text: str) -> Compiled:
    if not templating.is_template(text):
        return templating.constant(text)
    try:
        source = templating.parse(text)
    except TemplateSyntaxError as exc:
        site.error(pointer, "template.syntax",
                   f"template syntax error on line {exc.lineno} of the template: {exc.message}")
        return templating.constant(None)
    _check_references(site, pointer, source)
    if not site.compiler.codegen:
        return templating.constant(None)
    return templating.compile_bounded(source)


def _check_user_read(site: Site, pointer: str, source: templating.Source,
                     refs: templating.References) -> None:
    """In a public workflow `current_user` is null for most callers: reading its fields
    without testing it first is a run error waiting for an anonymous call."""
    data = site.unit.doc.data
    if (site.kind != DocumentKind.API_WORKFLOW or data.get("auth", "admin") != "none"
            or site.user_checked):
        return
    if any(root == "current_user" for root, _key, _line in refs.attributes) and not \
            templating.tests_name(source, "current_user"):
        site.compiler.warn(site.unit.doc, pointer, "access.unchecked-current-user",
                           "current_user is null when the caller is anonymous (auth: none): "
                           "test it first, e.g. {{ current_user and current_user.email }}")


def _check_references(site: Site, pointer: str, source: templating.Source) -> None:
    refs = templating.references(source)
    if "request" in refs.names:
        site.unit.reads_request = True
    check_attributes(site, pointer, source)
    _check_user_read(site, pointer, source, refs)
    allowed = site.names | templating.GLOBAL_NAMES
    for name in sorted(refs.names - allowed):
        site.error(pointer, "template.undefined-name",
                   f"'{name}' is not defined here" + did_you_mean(name, allowed))
    for root, key, _line in refs.attributes:
        if root == "params" and key not in site.params:
            site.error(pointer, "ref.unknown-param", f"'params.{key}' is not a declared parameter"
                       + did_you_mean(key, site.params))
        elif root == "steps" and key not in site.step_ids:
            where = ("this step itself" if key == site.own_id else
                     "a later step" if key in site.later_ids else "no earlier step")
            site.error(pointer, "ref.unknown-step",
                       f"'steps.{key}' refers to {where}; a step can only use the results "
                       "of steps before it")
        elif root == "option_sets" and key not in site.compiler.option_sets and \
                not site.compiler.is_broken(DocumentKind.OPTION_SET, key):
            site.error(pointer, "ref.unknown-type", f"unknown option set '{key}'"
                       + did_you_mean(key, site.compiler.option_sets))
        elif root == "secrets" and key not in site.compiler.settings.secret_names and \
                not site.compiler.is_broken(DocumentKind.SETTINGS, ""):
            site.error(pointer, "ref.unknown-secret",
                       f"'secrets.{key}' is not declared in the settings' secrets")
