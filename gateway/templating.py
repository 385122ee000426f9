"""Templates compiled once at load time, in the one sandboxed environment (`environment`).

A string that is exactly one `{{ expr }}` evaluates to the expression's native value (a
number stays a number, a list a list); any other string with template syntax renders to
text; everything else is a constant. Output is never rendered again, so request data that
contains `{{ }}` is only ever data.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.parser import Parser

from gateway import budget
from gateway import pointer as ptr
from gateway.environment import ENV
from gateway.errors import TemplateError
from gateway.sandbox import is_heavy

Scope = Mapping[str, Any]
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

    return _shortcut(_expression_node(text), evaluate) or evaluate


def _compile_text(source: Source) -> Compiled:
    template = ENV.from_string(source.ast)
    parts = _shortcut_parts(source.ast)

    def render(scope: Scope) -> str:
        if parts is not None:
            text = _render_parts(parts, scope)
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
    filters) runs inside a budget (`gateway.budget`) and is marked `heavy`, so that a run
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


def _expression_node(text: str) -> nodes.Expr | None:
    """The expression as `compile_expression` parses it (None if it does not parse)."""
    parser = Parser(ENV, text, state="variable")
    try:
        node = parser.parse_expression()
    except TemplateSyntaxError:
        return None
    return node if parser.stream.eos else None


# The shortcut: most templates are a lookup through dicts (`params.email`, `steps.a['b']`)
# with a few everyday filters after it (`| lower`, `| default('free', true) | upper`). Those
# evaluate in plain Python, calling the very filter functions Jinja's generated code calls,
# with the same arguments. Anything else (a missing key, a value that is not a dict, a filter
# that raises, an expression of any other shape) is `_UNSURE` and takes Jinja's path, so
# undefined names, the sandbox's checks and every error stay Jinja's own.
_UNSURE: Any = object()
Shortcut = Callable[[Scope], Any]
_FilterCall = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]

# Filters that are plain functions of their arguments; `replace` and `join` take the
# evaluation context only to know whether to autoescape, which this environment never does.
_PLAIN_FILTERS = frozenset({
    "lower", "upper", "trim", "default", "d", "capitalize", "title", "string", "length",
    "count", "int", "float", "abs", "round", "wordcount", "format_date", "date", "tojson",
    "parse_date"})
_EVAL_CONTEXT_FILTERS = frozenset({"replace", "join"})
# Of those, the ones whose result is no larger than what they are given (or a constant of the
# config's, or a number): the shortcut calls them as they are, without the sandbox's guard
# (`gateway.sandbox.guard_filter`), which costs more than they do.
_UNGUARDED = frozenset({
    "lower", "upper", "trim", "default", "d", "capitalize", "title", "string", "length",
    "count", "int", "float", "abs", "round", "wordcount", "tojson", "parse_date"})
_EVAL_CONTEXT = nodes.EvalContext(ENV)
# Filters that are, on text, the method of the same effect: called as it is (a value that is
# not text makes it raise, and Jinja's path then gives the filter's own answer).
_STR_METHODS: dict[str, Callable[[str], str]] = {
    "lower": str.lower, "upper": str.upper, "trim": str.strip}


def _unsure(scope: Scope) -> Any:
    return _UNSURE


def _shortcut(node: nodes.Node | None, otherwise: Shortcut = _unsure) -> Shortcut | None:
    """A function evaluating `node` by the shortcut, which calls `otherwise` (by default:
    gives `_UNSURE`) whenever it is unsure; None if the node has no shortcut."""
    calls: list[_FilterCall] = []
    while isinstance(node, nodes.Filter):
        call = _filter_call(node)
        if call is None:
            return None
        calls.append(call)
        node = node.node
    path = _lookup_path(node)
    if path is None:
        return None
    if not calls:
        return _lookup(path, otherwise)
    lookup = _lookup(path, _unsure)
    chain = tuple(_applied(call) for call in reversed(calls))

    def shortcut(scope: Scope) -> Any:
        value = lookup(scope)
        if value is _UNSURE:
            return otherwise(scope)
        try:
            for apply in chain:
                value = apply(value)
        except Exception:  # noqa: BLE001 - Jinja's path runs it again and reports it
            return otherwise(scope)
        return value

    return shortcut


def _lookup(path: tuple[str, ...], otherwise: Shortcut) -> Shortcut:
    """The value at `path` through nested dicts, or `otherwise(scope)` (not a dict, a key
    missing). Two keys (`params.email`) is by far the most common path: it gets a function
    of its own."""
    if len(path) == 2:
        first, second = path

        def lookup_two(scope: Scope) -> Any:
            value = scope.get(first, _UNSURE) if type(scope) is dict else _UNSURE
            value = value.get(second, _UNSURE) if type(value) is dict else _UNSURE
            return value if value is not _UNSURE else otherwise(scope)

        return lookup_two

    def lookup(scope: Scope) -> Any:
        value: Any = scope
        for key in path:
            if type(value) is not dict:
                return otherwise(scope)  # not a dict, or a key missing one level up
            value = value.get(key, _UNSURE)
        return value if value is not _UNSURE else otherwise(scope)

    return lookup


def _applied(call: _FilterCall) -> Callable[[Any], Any]:
    """One filter as a function of the value alone."""
    function, args, kwargs = call
    if not args and not kwargs:
        return function

    def apply(value: Any) -> Any:
        return function(value, *args, **kwargs)

    return apply


def _lookup_path(node: nodes.Node | None) -> tuple[str, ...] | None:
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
    if node.name in _UNGUARDED:
        function = getattr(function, "__wrapped__", None) or function
    args = tuple(arg.value for arg in node.args if isinstance(arg, nodes.Const))
    kwargs: dict[str, Any] = {}
    for keyword in node.kwargs:  # typed as `Pair`, built by the parser as `Keyword`
        value: Any = keyword.value
        if not isinstance(keyword, nodes.Keyword) or not isinstance(value, nodes.Const):
            return None
        kwargs[keyword.key] = value.value
    if len(args) != len(node.args) or len(kwargs) != len(node.kwargs):
        return None  # an argument that is not a constant, or a keyword given twice
    if not args and not kwargs and node.name in _STR_METHODS:
        function = _STR_METHODS[node.name]
    return function, args, kwargs


# A text template made only of literal text and shortcut expressions (`Hello {{ params.name
# }}`, `{{ params.name | trim }} <{{ params.email | lower }}>`) renders by concatenation,
# each value through `str` as Jinja's generated code does; anything unsure takes Jinja's path.
_Part = str | Shortcut


def _shortcut_parts(ast: nodes.Template) -> list[_Part] | None:
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    parts: list[_Part] = []
    for node in ast.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append(node.data)
            continue
        shortcut = _shortcut(node)
        if shortcut is None:
            return None
        parts.append(shortcut)
    return parts


def _render_parts(parts: list[_Part], scope: Scope) -> str | None:
    out: list[str] = []
    for part in parts:
        if type(part) is str:
            out.append(part)
            continue
        value = part(scope)  # type: ignore[operator]
        if value is _UNSURE:
            return None
        out.append(value if type(value) is str else str(value))
    return "".join(out)


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
