"""Templates compiled once at load time, in the one sandboxed environment (`environment`).

A string that is exactly one `{{ expr }}` evaluates to the expression's native value (a
number stays a number, a list a list); any other string with template syntax renders to
text; everything else is a constant. Output is never rendered again, so request data that
contains `{{ }}` is only ever data.

A template that is a lookup through dicts with everyday filters (`{{ params.email | lower }}`,
`Hello {{ params.name }}`) is evaluated in plain Python (`lookups`), through the same guarded
filters, and otherwise by Jinja: a compiled template is one function of the scope either way.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.parser import Parser

from gateway.core import pointer as ptr
from gateway.core.errors import TemplateError
from gateway.templates import budget
from gateway.templates.environment import ENV
from gateway.templates.lookups import Scope, compile_lookup, lookup_parts, path_of, render_parts
from gateway.templates.sandbox import is_heavy

Compiled = Callable[[Scope], Any]

# Names a template may use; which of them a given workflow provides is the compiler's business.
GLOBAL_NAMES = frozenset({"minutes", "hours", "days", "seconds", "parse_date", "range", "dict",
                          "lipsum", "cycler", "joiner", "namespace"})
_LONE = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.S)


@dataclass(frozen=True, slots=True)
class Source:
    """One template string as written, parsed; `expression` is set for a lone `{{ expr }}`."""

    text: str
    ast: nodes.Template
    expression: str | None


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def lone_expression(text: str) -> str | None:
    match = _LONE.match(text)
    if match is None:
        return None
    inner = match.group("expr")
    return None if ("{{" in inner or "}}" in inner or "{%" in inner) else inner


@functools.lru_cache(maxsize=8192)
def parse(text: str) -> Source:
    """Parse a template; raises `jinja2.TemplateSyntaxError` with a line number.

    Cached by text: configs repeat the same templates (`{{ params.email }}`) many times."""
    expression = lone_expression(text)
    ast = ENV.parse(text)
    return Source(text, ast, expression)


def _undefined_error(value: Undefined) -> TemplateError:
    try:
        str(value)
    except (UndefinedError, SecurityError) as exc:
        return TemplateError(str(exc))
    return TemplateError("the expression is undefined")


def compile_source(source: Source) -> Compiled:
    """A function of the scope that evaluates the template."""
    if source.expression is not None:
        return _compile_expression(source, source.expression)
    return _compile_text(source)


def _compile_expression(source: Source, text: str) -> Compiled:
    expression = ENV.compile_expression(text, undefined_to_none=False)

    def evaluate(scope: Scope) -> Any:
        try:
            value = expression(**scope)
        except (UndefinedError, SecurityError, TypeError, ValueError, ArithmeticError,
                LookupError, AttributeError) as exc:
            raise TemplateError(f"{source.text.strip()}: {exc}") from exc
        if isinstance(value, Undefined):
            raise TemplateError(f"{source.text.strip()}: {_undefined_error(value)}")
        return value

    return compile_lookup(_expression_node(text), evaluate) or evaluate


def _compile_text(source: Source) -> Compiled:
    template = ENV.from_string(source.ast)
    parts = lookup_parts(source.ast)

    def render(scope: Scope) -> str:
        if parts is not None:
            text = render_parts(parts, scope)
            if text is not None:
                return text
        try:
            return template.render(scope)
        except (UndefinedError, SecurityError, TypeError, ValueError, ArithmeticError,
                LookupError, AttributeError) as exc:
            raise TemplateError(f"{source.text.strip()}: {exc}") from exc

    return render


def compile_bounded(source: Source) -> Compiled:
    """`compile_source`, bounded: a template that may take real work (it loops, calls or
    filters) runs inside a budget (`gateway.templates.budget`) and is marked `heavy`, so that a run
    evaluates it off the event loop."""
    compiled = compile_source(source)
    if not is_heavy(source.ast):
        return compiled
    text = source.text.strip()

    def bounded(scope: Scope) -> Any:
        try:
            if budget.active():
                return compiled(scope)
            with budget.bounded():
                return budget.measure(compiled(scope))
        except (AssertionError, RecursionError, MemoryError, OSError, SecurityError) as exc:
            raise TemplateError(f"{text}: {str(exc) or type(exc).__name__}") from exc

    bounded.heavy = True  # type: ignore[attr-defined]
    return bounded


def heavy(compiled: Compiled) -> bool:
    """Whether evaluating `compiled` may take real work (see `compile_bounded`)."""
    return getattr(compiled, "heavy", False)


def _marked(compiled: Compiled, parts: list[Compiled]) -> Compiled:
    if any(heavy(part) for part in parts):
        compiled.heavy = True  # type: ignore[attr-defined]
    return compiled


def lookup_path(text: str) -> tuple[str, ...] | None:
    """`("request", "headers", "x-id")` for `{{ request.headers['x-id'] }}`: the names of a
    template that is one lone lookup through constant keys, else None."""
    expression = lone_expression(text)
    return None if expression is None else path_of(_expression_node(expression))


def _expression_node(text: str) -> nodes.Expr | None:
    """The expression as `compile_expression` parses it (None if it does not parse)."""
    parser = Parser(ENV, text, state="variable")
    try:
        node = parser.parse_expression()
    except TemplateSyntaxError:
        return None
    return node if parser.stream.eos else None


def constant(value: Any) -> Compiled:
    """A value with no template in it; marked so that trees of constants fold."""

    def fixed(scope: Scope) -> Any:
        return value

    fixed.constant = True  # type: ignore[attr-defined]
    return fixed


def contains_template(value: Any) -> bool:
    """Whether any string inside a nested value has template syntax."""
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, dict):
        return any(contains_template(item) for item in value.values())
    if isinstance(value, list):
        return any(contains_template(item) for item in value)
    return False


def compile_tree(value: Any, leaf: Callable[[str, str], Compiled], pointer: str = "") -> Compiled:
    """Compile a nested JSON-like value; `leaf(text, pointer)` compiles each string in it."""
    if isinstance(value, str):
        return leaf(value, pointer)
    if isinstance(value, dict):
        items = [(key, compile_tree(item, leaf, ptr.join(pointer, key)))
                 for key, item in value.items()]
        if all(getattr(fn, "constant", False) for _, fn in items):
            return constant(value)
        return _marked(lambda scope: {key: fn(scope) for key, fn in items},
                       [fn for _, fn in items])
    if isinstance(value, list):
        parts = [compile_tree(item, leaf, ptr.join(pointer, i)) for i, item in enumerate(value)]
        if all(getattr(fn, "constant", False) for fn in parts):
            return constant(value)
        return _marked(lambda scope: [fn(scope) for fn in parts], parts)
    return constant(value)


@dataclass(frozen=True, slots=True)
class References:
    """What a template refers to: free names, and the keys read under `params` / `steps`."""

    names: frozenset[str]
    attributes: tuple[tuple[str, str, int], ...]  # (root name, first key, template line)


def references(source: Source) -> References:
    return _references(source.text)


@functools.lru_cache(maxsize=8192)
def _references(text: str) -> References:
    source = parse(text)
    names = _free_names(source.ast)
    found: list[tuple[str, str, int]] = []
    for node in source.ast.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, (nodes.Getattr, nodes.Getitem))
        target = node.node
        if not isinstance(target, nodes.Name) or target.ctx != "load":
            continue
        if isinstance(node, nodes.Getattr):
            found.append((target.name, node.attr, node.lineno))
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            found.append((target.name, node.arg.value, node.lineno))
    return References(names, tuple(found))


def reads_through(source: Source, root: str) -> list[tuple[str, str, int]]:
    """`(key, name, line)` for each `root.key.name` (or `root.key['name']`) the template
    reads: what it reads of a value it names by key (an option's attribute)."""
    found = []
    for node in source.ast.find_all(nodes.Getattr):
        assert isinstance(node, nodes.Getattr)
        target = node.node
        path = path_of(target)
        if path is not None and len(path) == 2 and path[0] == root:
            found.append((path[1], node.attr, node.lineno))
    return found


def tests_name(source: Source, name: str) -> bool:
    """Whether the template uses `name` by itself (`current_user and …`, `if current_user`,
    `current_user is none`), not only to read through it (`current_user.email`)."""
    read_through = used = 0
    for node in source.ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if isinstance(node, nodes.Name):
            used += node.name == name
        elif isinstance(node, (nodes.Getattr, nodes.Getitem)):
            target = node.node
            read_through += isinstance(target, nodes.Name) and target.name == name
    return used > read_through


def _free_names(ast: nodes.Template) -> frozenset[str]:
    """Names read but never bound inside the template (loop targets, `set`, macro arguments).

    A walk of the parsed tree: Jinja's own `meta.find_undeclared_variables` runs the code
    generator's analysis and costs ten times as much, which `gateway validate` feels."""
    loaded: set[str] = set()
    bound: set[str] = set()
    for name in ast.find_all(nodes.Name):
        assert isinstance(name, nodes.Name)
        (loaded if name.ctx == "load" else bound).add(name.name)
    if any(True for _ in ast.find_all(nodes.For)):
        bound.add("loop")
    return frozenset(loaded - bound)
