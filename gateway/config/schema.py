"""JSON Schema checks of config documents, turned into located diagnostics.

The schema (`schemas/gateway.schema.json`, shipped inside the package as
`gateway/schemas/`) is the truth about which keys each kind of document takes. `check` runs
one compiled validator over a document and turns every error into a `Diagnostic` with a
stable code (`schema.<keyword>` in kebab case), one clear sentence and the line and column
of the offending value, or of the offending key for unknown keys.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from jsonschema.exceptions import ValidationError, best_match, relevance
from jsonschema.protocols import Validator

from gateway.config.schema_validator import compiled_validator
from gateway.core import pointer as ptr
from gateway.core.errors import Diagnostic, did_you_mean

if TYPE_CHECKING:
    from gateway.config.source import Document

SCHEMA_NAME = "gateway.schema.json"

# Every code `check` can emit. `schema.const` cannot occur: the only `const`s are the `kind`
# and `action` of each branch, reached only when they already hold.
CODES = frozenset({
    "schema.kind",
    "schema.required",
    "schema.additional-properties",
    "schema.dependent-required",
    "schema.not",
    "schema.type",
    "schema.enum",
    "schema.pattern",
    "schema.minimum",
    "schema.maximum",
    "schema.min-items",
    "schema.unique-items",
    "schema.min-length",
    "schema.max-length",
    "schema.min-properties",
})

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}
# The pattern the schema gives every key where a template may stand in for a number or a
# boolean; its failures are worded as a type mismatch, which is what the author got wrong.
TEMPLATE_PATTERN = r"\{\{[\s\S]*\}\}"
_TEMPLATE_SHOWN = "a template ('{{ ... }}')"
# Keywords whose failure says nothing by itself: the useful errors are in their context.
_COMPOSITE = {"anyOf", "oneOf"}


def schema_source() -> Traversable:
    """Where the schema is read from: the package data, else the source tree's `schemas/`."""
    packaged = files("gateway") / "schemas" / SCHEMA_NAME
    if packaged.is_file():
        return packaged
    # A source checkout or an editable install: the schema lives beside the package.
    return Path(__file__).resolve().parents[2] / "schemas" / SCHEMA_NAME


@functools.cache
def schema_document() -> dict[str, Any]:
    """The schema as data (cached: callers must not change it)."""
    document: dict[str, Any] = json.loads(schema_source().read_text(encoding="utf-8"))
    return document


@functools.cache
def validator() -> Validator:
    """The one compiled validator of the schema (Draft 2020-12; no format checks)."""
    return compiled_validator(schema_document())


def check(doc: Document) -> list[Diagnostic]:
    """Every schema problem of one document, located, without duplicates, in order."""
    return diagnose(doc, validator().iter_errors(doc.data))


# What the semantic checks cannot do without: a problem in one of these (or in a key above
# one) leaves the document out of them, as a whole, lest a missing declaration be reported
# again under every name that refers to it. Any other problem leaves out only its key, or
# its step: the rest of the document is still checked.
_KEPT_WHOLE = frozenset({
    ("kind",), ("name",), ("auth",), ("params",), ("returns",), ("steps",), ("fields",),
    ("privacy",), ("everyone_else",), ("secrets",), ("smtp", "from"), ("type",),
    ("workflow",), ("cron",), ("every",), ("events",), ("cases",),
    ("ignore_privacy_rules",), ("allow_public_privileged",), ("options",), ("attributes",),
})
_MOST_ROUNDS = 10


def well_formed(doc: Document, broken: frozenset[str] = frozenset()) -> Document | None:
    """What the semantic checks may still see of a document that failed the schema: a step
    with a problem is marked `broken` (the compiler passes it by, knowing its id), another
    key with a problem is taken out (its default applies), until what remains passes the
    schema; None when a problem is in something the checks need whole (`_KEPT_WHOLE`).
    `broken` names steps already known to be broken (`/steps/<n>`)."""
    data = copy.deepcopy(doc.data)
    steps = set(broken)
    for _ in range(_MOST_ROUNDS):
        cuts = [path for error in validator().iter_errors(data) for path in _cut(error)
                if not _in_steps(path, steps)]
        if not cuts:
            return dataclasses.replace(doc, data=data, broken=frozenset(steps))
        for path in cuts:
            if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
                steps.add(f"/steps/{path[1]}")
            elif any(path[:len(kept)] == kept or kept[:len(path)] == path
                     for kept in _KEPT_WHOLE):
                return None
            else:
                _remove(data, path)
    return None


def _cut(error: ValidationError) -> list[tuple[Any, ...]]:
    """Where a schema error is taken out: the keys it names, or the value it is about."""
    here = tuple(error.absolute_path)
    keyword = str(error.validator)
    if keyword == "additionalProperties" and _value_of(error) is False:
        return [(*here, key) for key in _unknown_keys(error)]
    if keyword == "dependentRequired":
        return [(*here, key) for key, _ in _unmet_dependencies(error)]
    if keyword == "not" and _exclusive_keys(error):
        return [(*here, _exclusive_keys(error)[-1])]
    if _is_property_name_error(error):
        return [(*here, str(error.instance))]
    return [here]


def _in_steps(path: tuple[Any, ...], steps: set[str]) -> bool:
    return len(path) >= 2 and path[0] == "steps" and f"/steps/{path[1]}" in steps


def _remove(data: Any, path: tuple[Any, ...]) -> None:
    """Take out the key nearest `path`'s end (a list's item takes the list with it, so that
    the pointers of what stays do not move)."""
    last = max(i for i, part in enumerate(path) if isinstance(part, str))
    parent = data
    for part in path[:last]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return  # taken out already, with a key above it
    if isinstance(parent, dict):
        parent.pop(path[last], None)


def diagnose(doc: Document, errors: Iterable[ValidationError]) -> list[Diagnostic]:
    """The diagnostics for a document's validation errors (see `check`)."""
    found = list(errors)
    kind_error = next((error for error in found if _is_kind_error(error)), None)
    if kind_error is not None:
        # Without a known kind nothing else can be said usefully about the document.
        first = next(_diagnostics(doc, kind_error))
        return [dataclasses.replace(first, code="schema.kind")]
    seen: set[tuple[str, str, str]] = set()
    result: list[Diagnostic] = []
    for error in found:
        for diagnostic in _diagnostics(doc, _leaf(error)):
            identity = (diagnostic.pointer, diagnostic.code, diagnostic.message)
            if identity not in seen:
                seen.add(identity)
                result.append(diagnostic)
    return sorted(result)


def _is_kind_error(error: ValidationError) -> bool:
    if not error.path:
        return error.validator == "required" and "kind" not in _object(error.instance)
    return list(error.path) == ["kind"]


def _leaf(error: ValidationError) -> ValidationError:
    """For anyOf/oneOf, the most relevant error among the alternatives, not all of them."""
    while error.validator in _COMPOSITE and error.context:
        chosen = best_match([error])
        # When alternatives tie, best_match gives up; the first of them is as good as any.
        error = chosen if chosen is not error else min(error.context, key=relevance)
    return error


def _object(instance: Any) -> dict[str, Any]:
    return instance if isinstance(instance, dict) else {}


def _code(keyword: str) -> str:
    return "schema." + re.sub(r"(?<!^)([A-Z])", r"-\1", keyword).lower()


def _diagnostics(doc: Document, error: ValidationError) -> Iterator[Diagnostic]:
    """One diagnostic per problem: an error about a mapping may name several keys."""
    here = ptr.from_path(error.absolute_path)
    keyword = str(error.validator)
    if keyword == "required":
        for key in _missing(error):
            yield doc.diagnostic(here, "schema.required", f"missing required key '{key}'")
    elif keyword == "additionalProperties" and _value_of(error) is False:
        for key in _unknown_keys(error):
            yield doc.diagnostic(ptr.join(here, key), _code(keyword), _unknown_message(error, key),
                                 key=True)
    elif keyword == "dependentRequired":
        for key, needed in _unmet_dependencies(error):
            yield doc.diagnostic(ptr.join(here, key), _code(keyword),
                                 f"key '{key}' requires key '{needed}'", key=True)
    elif keyword == "not" and _exclusive_keys(error):
        keys = _exclusive_keys(error)
        listed = " and ".join(f"'{key}'" for key in keys)
        yield doc.diagnostic(ptr.join(here, keys[-1]), _code(keyword),
                             f"keys {listed} cannot be used together", key=True)
    elif _is_property_name_error(error):
        key = str(error.instance)
        yield doc.diagnostic(ptr.join(here, key), _code(keyword), _key_message(error, key),
                             key=True)
    else:
        yield doc.diagnostic(here, _code(keyword), _message(error))


def _schema_of(error: ValidationError) -> Mapping[str, Any]:
    return error.schema if isinstance(error.schema, Mapping) else {}


def _value_of(error: ValidationError) -> Any:
    return cast(Any, error.validator_value)


def _missing(error: ValidationError) -> list[str]:
    present = _object(error.instance)
    return [key for key in _value_of(error) if key not in present]


def _unknown_keys(error: ValidationError) -> list[str]:
    known = _schema_of(error).get("properties", {})
    patterns = _schema_of(error).get("patternProperties", {})
    return [
        key for key in _object(error.instance)
        if key not in known and not any(re.search(p, key) for p in patterns)
    ]


def _unknown_message(error: ValidationError, key: str) -> str:
    return f"unknown key '{key}'" + did_you_mean(key, list(_schema_of(error).get("properties", {})))


def _unmet_dependencies(error: ValidationError) -> Iterator[tuple[str, str]]:
    present = _object(error.instance)
    for key, needs in _value_of(error).items():
        if key in present:
            yield from ((key, need) for need in needs if need not in present)


def _is_property_name_error(error: ValidationError) -> bool:
    path = error.relative_schema_path
    return len(path) >= 2 and path[-2] == "propertyNames"


def _key_message(error: ValidationError, key: str) -> str:
    pattern = str(_value_of(error))
    if key.startswith("_") and error.validator == "pattern" and re.search(pattern, key[1:]):
        return f"key '{key}' is reserved: names starting with '_' are kept for built-in ones"
    return f"key {key!r} does not match {pattern!r}"


def _message(error: ValidationError) -> str:
    build = _MESSAGES.get(str(error.validator))
    return build(error) if build else error.message


def _show(value: Any) -> str:
    """A value as the YAML author wrote it, kept short: whole mappings are not echoed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(types: Any) -> str:
    names = [types] if isinstance(types, str) else list(types)
    return " or ".join(_TYPE_NAMES.get(name, name) for name in names)


def _type_message(error: ValidationError) -> str:
    expected = _expected(_value_of(error))
    if _schema_of(error).get("pattern") == TEMPLATE_PATTERN:
        expected = expected.replace(_TYPE_NAMES["string"], _TEMPLATE_SHOWN)
    return f"expected {expected}, got {_show(error.instance)}"


def _enum_message(error: ValidationError) -> str:
    choices = list(_value_of(error))
    message = f"{_show(error.instance)} is not one of {choices!r}"
    if isinstance(error.instance, str):
        message += did_you_mean(error.instance, [c for c in choices if isinstance(c, str)])
    return message


# The schema's `duration` (one whole number and a unit, bounded so that a date plus it stays
# a date a database holds).
DURATION_PATTERN = "^([0-9]{1,13}ms|[0-9]{1,10}s|[0-9]{1,8}m|[0-9]{1,6}h|[0-9]{1,5}d)$"


def _pattern_message(error: ValidationError) -> str:
    if _value_of(error) == DURATION_PATTERN:
        return (f"{_show(error.instance)} is not a duration: a whole number and ms, s, m, h or "
                "d, of at most 99999d")
    if _value_of(error) != TEMPLATE_PATTERN:
        return f"{_show(error.instance)} does not match {_value_of(error)!r}"
    # A template standing in for a typed value: name the types and the template together.
    types = _schema_of(error).get("type", "string")
    others = [t for t in ([types] if isinstance(types, str) else types) if t != "string"]
    expected = " or ".join([_TYPE_NAMES.get(t, t) for t in others] + [_TEMPLATE_SHOWN])
    return f"expected {expected}, got {_show(error.instance)}"


def _exclusive_keys(error: ValidationError) -> list[str]:
    """The keys of a `not: {required: [...]}`: keys that must not appear together."""
    forbidden = _object(_value_of(error)).get("required")
    return [str(key) for key in forbidden] if isinstance(forbidden, list) else []


def _unique_message(error: ValidationError) -> str:
    items = error.instance if isinstance(error.instance, list) else []
    repeated = next((item for i, item in enumerate(items) if item in items[:i]), None)
    return f"{_show(repeated)} is listed more than once"


def _min_items_message(error: ValidationError) -> str:
    wanted = _value_of(error)
    return "the list must not be empty" if wanted == 1 else f"expected at least {wanted} items"


_MESSAGES: dict[str, Callable[[ValidationError], str]] = {
    "type": _type_message,
    "enum": _enum_message,
    "pattern": _pattern_message,
    "uniqueItems": _unique_message,
    "minItems": _min_items_message,
    "const": lambda e: f"expected {_value_of(e)!r}, got {_show(e.instance)}",
    "minimum": lambda e: f"{_show(e.instance)} is less than the minimum of {_value_of(e)}",
    "maximum": lambda e: f"{_show(e.instance)} is greater than the maximum of {_value_of(e)}",
}
