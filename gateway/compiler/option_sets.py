"""The option sets pass: each set's options in order, their attributes checked against the
set's declared ones, and the sets known by name before data types and workflows use them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from gateway.config.source import Document, DocumentKind
from gateway.core import pointer as ptr
from gateway.core.errors import did_you_mean
from gateway.runtime.coercion import convert_value
from gateway.runtime.param import SCALAR_TYPES, Param
from gateway.storage.contract import Option, OptionSet
from gateway.templates import templating

if TYPE_CHECKING:
    from gateway.compiler import Compiler

# The types an attribute may have: an option's attributes are constants of the config.
ATTRIBUTE_TYPES = ("text", "number", "integer", "boolean")


def declare_option_sets(c: Compiler, kind: str, docs: list[Document]) -> None:
    seen: dict[str, Document] = {}
    for doc in docs:
        name = doc.data["name"]
        first = seen.get(name)
        if first is not None:
            line = first.locate("/name")[0]
            c.error(doc, "/name", "name.duplicate",
                    f"option set '{name}' is already defined at {first.file}:{line}")
            continue
        if name in SCALAR_TYPES:
            c.error(doc, "/name", "option_set.name-clash",
                    f"'{name}' is a built-in type: name the option set otherwise")
            continue
        seen[name] = doc
        attributes = dict(doc.data.get("attributes", {}))
        options = tuple(_option(c, doc, index, data, attributes)
                        for index, data in enumerate(doc.data.get("options", [])))
        _check_unique(c, doc, options)
        c.option_sets[name] = OptionSet.of(name, options, attributes)


def check_names(c: Compiler) -> None:
    """An option set and a data type with one name: a field of that type would be both."""
    for doc in c.documents:
        if doc.data.get("kind") == DocumentKind.DATA_TYPE and \
                doc.data.get("name") in c.option_sets:
            c.error(doc, "/name", "option_set.name-clash",
                    f"'{doc.data['name']}' is already the name of an option set: a type "
                    "names one or the other")


def _option(c: Compiler, doc: Document, index: int, data: Mapping[str, Any],
            declared: Mapping[str, str]) -> Option:
    base = f"/options/{index}"
    given = data.get("attributes", {})
    values: dict[str, Any] = dict.fromkeys(declared)
    for key, value in given.items():
        pointer = ptr.join(base, "attributes", key)
        if key not in declared:
            c.error(doc, pointer, "option_set.unknown-attribute",
                    f"'{key}' is not an attribute of the option set {doc.data['name']}"
                    + (did_you_mean(key, declared) if declared else
                       " (it declares none: add it under `attributes`)"))
            continue
        try:
            values[key] = convert_value(value, declared[key])
        except ValueError:
            c.error(doc, pointer, "value.type-mismatch",
                    f"{json.dumps(value)} is not a valid {declared[key]} "
                    f"(the type of the attribute {key})")
    value = data["value"]
    return Option(value, data.get("display", value), values)


def _check_unique(c: Compiler, doc: Document, options: tuple[Option, ...]) -> None:
    for what, code in (("value", "option_set.duplicate-value"),
                       ("display", "option_set.duplicate-display")):
        first: dict[str, int] = {}
        for index, option in enumerate(options):
            key = getattr(option, what)
            if key in first:
                c.error(doc, f"/options/{index}/{what}", code,
                        f"the {what} {json.dumps(key)} is already that of the option at "
                        f"/options/{first[key]} of {doc.data['name']}: each option's "
                        f"{what} is its own")
            else:
                first[key] = index


class AttributeSite(Protocol):
    """What checking an option's attributes needs of the place a template is in (a
    `steps.Site`, not imported: the steps pass imports this one)."""

    @property
    def params(self) -> Mapping[str, Param]: ...

    def error(self, pointer: str, code: str, message: str, *, key: bool = False) -> None: ...


def check_attributes(site: AttributeSite, pointer: str, source: templating.Source) -> None:
    """A template reading `params.p.x` where `p` is an option: `x` must be one of the set's
    attributes, `value`, `display`, or a text method (an option is text)."""
    for key, name, _line in templating.reads_through(source, "params"):
        param = site.params.get(key)
        if param is None or param.options is None:
            continue
        known = {*param.options.attributes, "value", "display"}
        if name not in known and not hasattr(str, name):
            site.error(pointer, "ref.unknown-attribute",
                       f"'params.{key}.{name}': the option set {param.options.name} has no "
                       f"attribute '{name}'" + did_you_mean(name, known))


def build_option_sets(c: Compiler, kind: str, names: frozenset[str]) -> Mapping[str, Any]:
    return c.option_sets
