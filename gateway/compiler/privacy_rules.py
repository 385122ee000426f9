"""The privacy rules of data types, compiled: their `when` templates checked (they see
`thing` and `current_user`; `thing.X` must be a field), their `view_fields` checked, and the
rules a search can hand to the database recognised."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateSyntaxError, nodes

from gateway.config.source import Document
from gateway.core import pointer as ptr
from gateway.core.errors import did_you_mean
from gateway.runtime.privacy import (
    ALL,
    ALWAYS_SHOWN,
    EVERYTHING,
    HIDEABLE_SYSTEM_FIELDS,
    NOTHING,
    Grant,
    Privacy,
    Rule,
)
from gateway.storage.contract import TypeSpec
from gateway.templates import templating
from gateway.templates.sandbox import is_heavy
from gateway.templates.templating import Compiled

if TYPE_CHECKING:
    from gateway.compiler import Compiler

NAMES = frozenset({"thing", "current_user"})
# The built-in user type, unless a `data_type: user` document says otherwise: users find and
# see themselves, and nobody else finds them.
_SELF = "{{ thing._id == current_user._id }}"


def builtin_user_privacy() -> Privacy:
    when = templating.compile_source(templating.parse(_SELF))
    return Privacy("user", (Rule("users see themselves", when, EVERYTHING, "_id"),), NOTHING)


def compile_privacy(c: Compiler, doc: Document, spec: TypeSpec) -> Privacy | None:
    """The type's privacy, or None for a type that declares none (visible to everyone)."""
    data = doc.data
    if "privacy" not in data and "everyone_else" not in data:
        return builtin_user_privacy() if spec.name == "user" else None
    rules = tuple(_rule(c, doc, spec, f"/privacy/{i}", raw)
                  for i, raw in enumerate(data.get("privacy", [])))
    rest = data.get("everyone_else", {})
    everyone_else = _grant(c, doc, spec, "/everyone_else", rest)
    return Privacy(spec.name, rules, everyone_else, frozenset(spec.fields))


def _rule(c: Compiler, doc: Document, spec: TypeSpec, base: str,
          raw: Mapping[str, Any]) -> Rule:
    when = raw["when"]
    compiled = (_template(c, doc, spec, base + "/when", when) if isinstance(when, str)
                else templating.constant(bool(when)))
    pushable = _pushable(when, spec) if isinstance(when, str) else None
    return Rule(raw["name"], compiled, _grant(c, doc, spec, base, raw), pushable)


def _grant(c: Compiler, doc: Document, spec: TypeSpec, base: str,
           raw: Mapping[str, Any]) -> Grant:
    view = raw.get("view_fields", [])
    writes = (bool(raw.get("create_via_api", False)), bool(raw.get("modify_via_api", False)),
              bool(raw.get("delete_via_api", False)))
    if view == "all":
        return Grant(bool(raw.get("find_in_searches", False)), ALL, *writes)
    for index, name in enumerate(view):
        if not _known(spec, name):
            c.error(doc, ptr.join(base, "view_fields", index), "ref.unknown-field",
                    f"data type '{spec.name}' has no field '{name}'"
                    + did_you_mean(name, [*spec.fields, *sorted(HIDEABLE_SYSTEM_FIELDS)]))
    return Grant(bool(raw.get("find_in_searches", False)), frozenset(view), *writes)


def _known(spec: TypeSpec, name: str) -> bool:
    """A declared field, or a system one (`_id`, `created_by`, the dates)."""
    return name in spec.fields or name in ALWAYS_SHOWN or name in HIDEABLE_SYSTEM_FIELDS


def _template(c: Compiler, doc: Document, spec: TypeSpec, pointer: str, text: str) -> Compiled:
    if not templating.is_template(text):
        return templating.constant(bool(text))
    try:
        source = templating.parse(text)
    except TemplateSyntaxError as exc:
        c.error(doc, pointer, "template.syntax",
                f"template syntax error on line {exc.lineno} of the template: {exc.message}")
        return templating.constant(False)
    if is_heavy(source.ast):
        c.error(doc, pointer, "privacy.heavy-rule",
                "a privacy rule is evaluated for every record a search reads: it may compare "
                "and test fields, not loop, call or filter beyond the plain filters")
    refs = templating.references(source)
    allowed = NAMES | templating.GLOBAL_NAMES
    for name in sorted(refs.names - allowed):
        c.error(doc, pointer, "template.undefined-name",
                f"'{name}' is not defined in a privacy rule (it sees thing and current_user)"
                + did_you_mean(name, allowed))
    for root, key, _line in refs.attributes:
        if root == "thing" and not _known(spec, key):
            c.error(doc, pointer, "ref.unknown-field",
                    f"data type '{spec.name}' has no field '{key}'"
                    + did_you_mean(key, spec.fields))
    return templating.compile_source(source) if c.codegen else templating.constant(False)


def _pushable(text: str, spec: TypeSpec) -> str | None:
    """F when the template is exactly `thing.F == current_user._id` (either way round)."""
    try:
        source = templating.parse(text)
    except TemplateSyntaxError:
        return None
    if source.expression is None:
        return None
    body = source.ast.body
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        return None
    node = body[0].nodes[0]
    if not isinstance(node, nodes.Compare) or len(node.ops) != 1 or node.ops[0].op != "eq":
        return None
    sides = [_path(node.expr), _path(node.ops[0].expr)]
    for mine, theirs in (sides, sides[::-1]):
        if mine is not None and theirs == ("current_user", "_id") and mine[0] == "thing":
            field = mine[1]
            declared = spec.fields.get(field)
            if field in ("_id", "created_by") or (declared is not None and not declared.list):
                return field
    return None


def _path(node: nodes.Expr) -> tuple[str, str] | None:
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        return node.node.name, node.attr
    return None
