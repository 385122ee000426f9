"""Lookups: most templates are a lookup through dicts (`params.email`, `steps.a['b']`)
with a few everyday filters after it (`| lower`, `| default('free', true) | upper`). Those
evaluate in plain Python, calling the very filter functions Jinja's generated code calls (the
environment's, each behind the sandbox's guard: it ticks the budget and measures the result),
with the same arguments. Anything else (a missing key, a value that is not a dict, a filter
that raises or goes past a limit, an expression of any other shape) is unsure and takes
Jinja's path, so undefined names, the sandbox's checks and every error stay Jinja's own.

Only `templating` uses this module: it compiles a template as a lookup when it is one, behind
the one compile/evaluate interface, and callers never know which path a template takes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import nodes

from gateway.templates.budget import LimitError, limits, measure
from gateway.templates.environment import ENV

Scope = Mapping[str, Any]
_UNSURE: Any = object()
Lookup = Callable[[Scope], Any]
_FilterCall = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]

# Filters that are plain functions of their arguments; `replace` and `join` take the
# evaluation context only to know whether to autoescape, which this environment never does.
_PLAIN_FILTERS = frozenset({
    "lower", "upper", "trim", "default", "d", "capitalize", "title", "string", "length",
    "count", "int", "float", "abs", "round", "wordcount", "format_date", "date", "tojson",
    "parse_date"})
_EVAL_CONTEXT_FILTERS = frozenset({"replace", "join"})
_EVAL_CONTEXT = nodes.EvalContext(ENV)


def _unsure(scope: Scope) -> Any:
    return _UNSURE


def compile_lookup(node: nodes.Node | None, otherwise: Lookup = _unsure) -> Lookup | None:
    """A function evaluating `node` as a lookup, which calls `otherwise` (by default: gives
    `_UNSURE`) whenever it is unsure; None if the node is not a lookup with everyday
    filters."""
    calls: list[_FilterCall] = []
    while isinstance(node, nodes.Filter):
        call = _filter_call(node)
        if call is None:
            return None
        calls.append(call)
        node = node.node
    path = path_of(node)
    if path is None:
        return None
    if not calls:
        return _read(path, otherwise)
    read = _read(path, _unsure)
    chain = tuple(_applied(call) for call in reversed(calls))

    def chain_of_filters(scope: Scope) -> Any:
        value = read(scope)
        if value is _UNSURE:
            return otherwise(scope)
        try:
            for apply in chain:
                value = apply(value)
        except Exception:  # noqa: BLE001 - Jinja's path runs it again and reports it
            return otherwise(scope)
        return value

    return chain_of_filters


def _read(path: tuple[str, ...], otherwise: Lookup) -> Lookup:
    """The value at `path` through nested dicts, or `otherwise(scope)` (not a dict, a key
    missing). Two keys (`params.email`) is by far the most common path: it gets a function
    of its own."""
    if len(path) == 2:
        first, second = path

        def read_two(scope: Scope) -> Any:
            value = scope.get(first, _UNSURE) if type(scope) is dict else _UNSURE
            value = value.get(second, _UNSURE) if type(value) is dict else _UNSURE
            return value if value is not _UNSURE else otherwise(scope)

        return read_two

    def read(scope: Scope) -> Any:
        value: Any = scope
        for key in path:
            if type(value) is not dict:
                return otherwise(scope)  # not a dict, or a key missing one level up
            value = value.get(key, _UNSURE)
        return value if value is not _UNSURE else otherwise(scope)

    return read


def _applied(call: _FilterCall) -> Callable[[Any], Any]:
    """One filter as a function of the value alone."""
    function, args, kwargs = call
    if not args and not kwargs:
        return function

    def apply(value: Any) -> Any:
        return function(value, *args, **kwargs)

    return apply


def path_of(node: nodes.Node | None) -> tuple[str, ...] | None:
    """`a.b['c']` as ("a", "b", "c"), if the node is exactly such a chain of constant keys."""
    path: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            path.append(node.attr)
        elif (isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const)
              and type(node.arg.value) is str):
            path.append(node.arg.value)
        else:
            break
        node = node.node
    if not isinstance(node, nodes.Name) or node.ctx != "load":
        return None
    path.append(node.name)
    return tuple(reversed(path))


def _filter_call(node: nodes.Filter) -> _FilterCall | None:
    """The function and constant arguments of one filter, if it is safe to call directly."""
    function = ENV.filters.get(node.name)
    passes = getattr(getattr(function, "jinja_pass_arg", None), "name", None)
    if function is None or node.node is None or node.dyn_args or node.dyn_kwargs:
        return None
    if node.name in _EVAL_CONTEXT_FILTERS and passes == "eval_context":
        function = functools.partial(function, _EVAL_CONTEXT)
    elif node.name not in _PLAIN_FILTERS or passes is not None:
        return None
    args = tuple(arg.value for arg in node.args if isinstance(arg, nodes.Const))
    kwargs: dict[str, Any] = {}
    for keyword in node.kwargs:  # typed as `Pair`, built by the parser as `Keyword`
        value: Any = keyword.value
        if not isinstance(keyword, nodes.Keyword) or not isinstance(value, nodes.Const):
            return None
        kwargs[keyword.key] = value.value
    if len(args) != len(node.args) or len(kwargs) != len(node.kwargs):
        return None  # an argument that is not a constant, or a keyword given twice
    return function, args, kwargs


# A text template made only of literal text and lookups (`Hello {{ params.name
# }}`, `{{ params.name | trim }} <{{ params.email | lower }}>`) renders by concatenation,
# each value measured and through `str` as Jinja's generated code does (the sandbox's
# `finalize`), joined by the sandbox's `concat`; anything unsure takes Jinja's path.
_Part = str | Lookup


def lookup_parts(ast: nodes.Template) -> list[_Part] | None:
    """The template's literal text and compiled lookups, in order; None if any of its
    pieces is something else."""
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    parts: list[_Part] = []
    for node in ast.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append(node.data)
            continue
        found = compile_lookup(node)
        if found is None:
            return None
        parts.append(found)
    return parts


def render_parts(parts: list[_Part], scope: Scope) -> str | None:
    """The text, each value measured and the whole joined as the sandbox's output is; None
    when unsure, or past a limit (Jinja's path then reports it in its own words)."""
    out: list[str] = []
    limit = limits()
    total = 0
    try:
        for part in parts:
            if type(part) is str:
                text = part
            else:
                value = part(scope)  # type: ignore[operator]
                if value is _UNSURE:
                    return None
                value = measure(value, limit)
                text = value if type(value) is str else str(value)
            total += len(text)
            out.append(text)
    except LimitError:
        return None
    # the whole measured as the sandbox's output is
    return "".join(out) if total <= limit.max_bytes else None


