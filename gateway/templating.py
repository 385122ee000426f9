"""The one sandboxed Jinja environment, and values compiled once at load time.

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
from datetime import datetime, timedelta, timezone
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.exceptions import SecurityError, UndefinedError

from gateway import budget
from gateway import pointer as ptr
from gateway.budget import check_size
from gateway.encoding import dumps_pretty
from gateway.errors import TemplateError
from gateway.sandbox import Sandbox, is_heavy

Scope = Mapping[str, Any]
Compiled = Callable[[Scope], Any]

# Names a template may use; which of them a given workflow provides is the compiler's business.
GLOBAL_NAMES = frozenset({"minutes", "hours", "days", "seconds", "parse_date", "range", "dict",
                          "lipsum", "cycler", "joiner", "namespace"})
_LONE = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.S)
_EPOCH_MS = re.compile(r"^\s*[0-9]{12,}\s*$")
_DOTTED = re.compile(r"^\s*[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\s*$")


def parse_date(value: Any) -> datetime:
    """ISO 8601 text (or epoch milliseconds, as a number or as 12 digits or more) to an aware
    UTC datetime; anything else is a `ValueError` that says what it was given."""
    try:
        return _parse_date(value)
    except (ValueError, TypeError, OverflowError, OSError) as exc:
        raise ValueError(f"not a date: {_short(value)} ({exc})") from exc


def _parse_date(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    elif isinstance(value, str) and _EPOCH_MS.match(value):
        return _parse_date(int(value.strip()))  # epoch milliseconds sent as text (forms, query)
    elif isinstance(value, str) and value.strip().isascii():
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    else:
        raise ValueError("expected ISO 8601 text or epoch milliseconds")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _format_date(value: Any, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    if not isinstance(fmt, str):
        raise ValueError(f"a date format is text, not {_short(fmt)}")
    check_size(len(fmt) * 64)  # no directive writes more than a few dozen characters
    try:
        return parse_date(value).strftime(fmt)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"cannot format a date with {_short(fmt)} ({exc})") from exc


def _tojson(value: Any, indent: int | None = None) -> str:
    return dumps_pretty(value, indent=indent)


def _duration(unit: str) -> Callable[[Any], timedelta]:
    def duration(n: Any) -> timedelta:
        if not isinstance(n, (int, float)) or isinstance(n, bool):
            raise ValueError(f"{unit}() takes a number, not {_short(n)}")
        try:
            return timedelta(**{unit: n})
        except (OverflowError, ValueError) as exc:
            raise ValueError(f"{unit}({_short(n)}) is out of range ({exc})") from exc

    return duration


def _make_environment() -> Sandbox:
    env = Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
                  cache_size=0)
    env.globals.update(minutes=_duration("minutes"), hours=_duration("hours"),
                       days=_duration("days"), seconds=_duration("seconds"),
                       parse_date=parse_date)
    env.add_filters(format_date=_format_date, date=_format_date, tojson=_tojson,
                    parse_date=parse_date)
    return env


ENV = _make_environment()


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
        expression = ENV.compile_expression(source.expression, undefined_to_none=False)
        dotted = _DOTTED.match(source.expression)
        path = [name.strip() for name in source.expression.split(".")] if dotted else None

        def evaluate(scope: Scope) -> Any:
            if path is not None:
                # The common `{{ params.x }}`: plain lookups through dicts; anything else
                # (an object, a missing key) takes Jinja's path and its exact semantics.
                value: Any = scope
                for name in path:
                    if type(value) is not dict or name not in value:
                        break
                    value = value[name]
                else:
                    return value
            try:
                value = expression(**scope)
            except (UndefinedError, SecurityError, TypeError, ValueError, ArithmeticError,
                    LookupError, AttributeError) as exc:
                raise TemplateError(f"{source.text.strip()}: {exc}") from exc
            if isinstance(value, Undefined):
                raise TemplateError(f"{source.text.strip()}: {_undefined_error(value)}")
            return value

        return evaluate
    template = ENV.from_string(source.ast)
    parts = _plain_parts(source.ast)

    def render(scope: Scope) -> str:
        if parts is not None:
            text = _render_plain(parts, scope)
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


# A text template made only of literal text and `{{ a.b.c }}` lookups (`Hello {{ params.name
# }}`) renders by plain concatenation; whatever else it meets takes Jinja's path.
_Part = str | tuple[str, ...]


def _plain_parts(ast: nodes.Template) -> list[_Part] | None:
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    parts: list[_Part] = []
    for node in ast.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append(node.data)
            continue
        path: list[str] = []
        while isinstance(node, nodes.Getattr):
            path.append(node.attr)
            node = node.node
        if not isinstance(node, nodes.Name):
            return None
        parts.append((node.name, *reversed(path)))
    return parts


def _render_plain(parts: list[_Part], scope: Scope) -> str | None:
    out: list[str] = []
    for part in parts:
        if type(part) is str:
            out.append(part)
            continue
        value: Any = scope
        for name in part:
            if type(value) is not dict or name not in value:
                return None
            value = value[name]
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
