"""Jinja's sandbox, bounded: how much one template evaluation may do, whatever it uses.

Jinja's `ImmutableSandboxedEnvironment` decides what a template may touch; `Sandbox` adds how
much it may do. Every loop iteration, call and filter ticks the evaluation's budget
(`gateway.templates.budget`); every value a template builds (a call's or filter's result, a
literal, a concatenation, an operator's result, each piece of output) is measured; and what
could build a huge value from a small one (a width, a count, a repetition, a join or replace
of large inputs) is refused before it allocates.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from string import Formatter
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import generate_lorem_ipsum
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from gateway.templates import budget
from gateway.templates.budget import LimitError, check_size, measure

MAX_POWER = 1000  # the largest exponent of `**` in a template
_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?"
                      r"[hlL]?(?P<type>.)", re.S)
_DIGITS = re.compile(r"\d+")
# Filters whose arguments are data (or are checked where they are used), not sizes.
_DATA_FILTERS = frozenset({"default", "d", "format", "sum", "map", "select", "reject",
                           "selectattr", "rejectattr", "int", "float", "format_date", "date",
                           "parse_date", "attr"})
# Filters that cost no more than their input, when their arguments are constants.
_CHEAP_FILTERS = frozenset({"default", "d", "length", "count", "lower", "upper", "trim", "int",
                            "float", "string", "first", "last", "abs", "e", "escape", "tojson",
                            "format_date", "date", "parse_date"})
_HEAVY = (nodes.For, nodes.Macro, nodes.CallBlock, nodes.FilterBlock, nodes.Call, nodes.Mul,
          nodes.Pow, nodes.Mod)


def _width(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        check_size(abs(value))


def check_percent(text: str, values: Any) -> None:
    """The widths and precisions of a `%` format, `*` ones included, before it runs."""
    given = list(values) if isinstance(values, tuple) else [values]
    index = 0
    for match in _PERCENT.finditer(text):
        for part in (match["width"], match["precision"]):
            if part == "*":
                _width(given[index] if index < len(given) else 0)
                index += 1
            elif part:
                _width(int(part))
        index += match["type"] != "%"


class _Checked(Formatter):
    """`str.format`: the widths and precisions of each field, once nested fields are in."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        for digits in _DIGITS.findall(format_spec):
            _width(int(digits))
        return super().format_field(value, format_spec)


class _CheckedFormatter(_Checked, SandboxedFormatter):
    pass


class _CheckedEscapeFormatter(_Checked, SandboxedEscapeFormatter):
    pass


def _numbers(params: Iterable[Any]) -> None:
    for value in params:
        _width(value)


def _text_estimate(text: Any, count: int, each: Any) -> None:
    if isinstance(text, str) and isinstance(each, str):
        check_size(len(text) + count * len(each))


def _join(value: Any, params: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    items: Any = value if isinstance(value, Sized) else list(value)
    if isinstance(items, str | Mapping):
        return items
    separator = str(params[0] if params else kwargs.get("d", ""))
    count = len(items)
    check_size(count, "items")
    text = sum(len(part) if isinstance(part, str) else 16 for part in items)
    check_size(text + max(count - 1, 0) * len(separator))
    return items


def _replace(value: Any, params: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    old, new = (list(params) + [kwargs.get("old"), kwargs.get("new")])[:2]
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
        found = value.count(old) if old else len(value) + 1
        check_size(len(value) + found * max(len(new) - len(old), 0))
    return value


def _indent(value: Any, params: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    width = params[0] if params else kwargs.get("width")
    if isinstance(value, str):
        _text_estimate(value, value.count("\n") + 1, width)
    return value


def _wordwrap(value: Any, params: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    width = params[0] if params else kwargs.get("width", 79)
    wrap = params[2] if len(params) > 2 else kwargs.get("wrapstring") or "\n"
    if isinstance(value, str) and isinstance(width, int) and width > 0:
        _text_estimate(value, len(value) // width + value.count("\n") + 1, wrap)
    return value


Estimate = Callable[[Any, tuple[Any, ...], Mapping[str, Any]], Any]
# Filters (and `str` methods) whose result can be far larger than any one input: estimated
# from their inputs before they run; each returns the value to call the filter with.
_ESTIMATES: dict[str, Estimate] = {"join": _join, "replace": _replace, "indent": _indent,
                                   "wordwrap": _wordwrap}


def _translate(value: Any, params: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    table = params[0] if params else None
    if isinstance(value, str) and isinstance(table, dict):
        longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
        check_size(len(value) * longest)
    return value


def _expandtabs(value: Any, params: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    size = params[0] if params else kwargs.get("tabsize", 8)
    if isinstance(value, str) and isinstance(size, int):
        check_size(len(value) + value.count("\t") * size)
    return value


_METHOD_ESTIMATES: dict[str, Estimate] = {
    "replace": _replace, "translate": _translate, "expandtabs": _expandtabs,
    "join": lambda sep, params, kwargs: _join(params[0] if params else (), (sep,), {}),
}


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """A method of a string or a number: its numbers are sizes, and some results are
    estimated from the inputs."""
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str | bytes | int | float):
        return
    _numbers(args)
    _numbers(kwargs.values())
    estimate = _METHOD_ESTIMATES.get(getattr(obj, "__name__", ""))
    if estimate is not None:
        estimate(owner, args, kwargs)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "**" and isinstance(right, int | float):
        if abs(right) > MAX_POWER:
            raise LimitError(f"an exponent above {MAX_POWER} is not allowed")
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            check_size(abs(left).bit_length() * right / 8)
    elif operator == "*":
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, str | bytes) and isinstance(count, int):
                check_size(len(sequence) * count)
            elif isinstance(sequence, list | tuple) and isinstance(count, int):
                check_size(len(sequence) * count, "items")
        if isinstance(left, int) and isinstance(right, int):
            check_size((left.bit_length() + right.bit_length()) / 8)
    elif operator == "+" and isinstance(left, str | list | tuple):
        if isinstance(right, str | list | tuple):
            check_size(len(left) + len(right), "bytes of text" if isinstance(left, str)
                       else "items")
    elif operator == "%" and isinstance(left, str):
        check_percent(left, right)


def guard_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that ticks the budget, refuses sizes past the limits before it runs, and
    measures what it returns."""
    skip = 1 if hasattr(fn, "jinja_pass_arg") else 0
    estimate = _ESTIMATES.get(name)
    sizes = name not in _DATA_FILTERS
    formats = name == "format"

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        running = budget.current()
        if running is not None:
            running.tick()
            limit = running.limits
        else:
            limit = budget.run_limits()
        if len(args) > skip:
            params = args[skip + 1:]
            if sizes:
                if params:
                    _numbers(params)
                if kwargs:
                    _numbers(kwargs.values())
            if estimate is not None:
                args = (*args[:skip], estimate(args[skip], params, kwargs), *params)
        if formats and len(args) > skip:
            check_percent(str(args[skip]), kwargs or tuple(args[skip + 1:]))
        try:
            result = fn(*args, **kwargs)
        except AssertionError as exc:  # Jinja checks some arguments with `assert`
            detail = f" ({exc})" if str(exc) else ""
            raise ValueError(f"the {name} filter cannot take these arguments{detail}") from exc
        if result.__class__ is str and len(result) <= limit.max_bytes:
            return result  # the most common result: a text within the limit
        return measure(result, limit)

    return guarded


def guard_test(name: str, fn: Any) -> Callable[..., Any]:
    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget.tick()
        return fn(*args, **kwargs)

    return guarded


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        budget.tick()
        yield item


@pass_context
def _loop(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    """What a `{% for %}` iterates: each iteration ticks the budget."""
    return _counted(iterable)


@pass_context
def _sized(context: Context, value: Any) -> Any:
    """A literal list, tuple or mapping, or a `~` concatenation: measured when built."""
    return measure(value)


class _Instrument(NodeTransformer):
    """Routes every loop through `_loop` and every literal through `_sized`."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _filter(node.iter, "_loop")
        return node

    def visit_List(self, node: nodes.Expr) -> nodes.Node:
        self.generic_visit(node)
        return _filter(node, "_sized")

    visit_Dict = visit_Concat = visit_List

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        return _filter(node, "_sized") if node.ctx == "load" else node


def _filter(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _Generator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        environment = node.environment if hasattr(node, "environment") else self.environment
        tree = copy.deepcopy(node, {id(environment): environment})  # the parsed tree is shared
        instrumented = _Instrument().visit(tree)
        assert isinstance(instrumented, nodes.Template)
        instrumented.set_environment(self.environment)
        super().visit_Template(instrumented, frame)


def _range(*args: int) -> range:
    numbers = range(*args)
    check_size(len(numbers), "items")
    return numbers


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    check_size(n * max * 12)
    return generate_lorem_ipsum(n, html, min, max)


class Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with its limits; also, a mapping's keys win over its methods (a parameter
    named `items` is the parameter)."""

    code_generator_class = _Generator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=measure, **options)
        self.filters = {name: guard_filter(name, fn) for name, fn in self.filters.items()}
        self.filters.update(_loop=_loop, _sized=_sized)
        self.tests = {name: guard_test(name, fn) for name, fn in self.tests.items()}
        self.globals.update(range=_range, lipsum=_lipsum)

    def add_filters(self, **filters: Callable[..., Any]) -> None:
        self.filters.update({name: guard_filter(name, fn) for name, fn in filters.items()})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget.tick()
        _check_call(obj, args, kwargs)
        return measure(super().call(context, obj, *args, **kwargs))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return measure(super().call_binop(context, operator, left, right))

    def concat(self, pieces: Iterable[str]) -> str:
        """Rendered output, measured as it grows."""
        limit = budget.limits().max_bytes
        out: list[str] = []
        total = 0
        for piece in pieces:
            total += len(piece)
            if total > limit:
                check_size(total)
            out.append(piece)
        return "".join(out)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if super().wrap_str_format(value) is None:
            return None
        text: str = value.__self__
        formatter: SandboxedFormatter = (
            _CheckedEscapeFormatter(self, escape=text.escape) if isinstance(text, Markup)
            else _CheckedFormatter(self))
        is_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            budget.tick()
            if not is_map:
                return type(text)(formatter.vformat(text, args, kwargs))
            if kwargs or len(args) != 1:
                raise TypeError("format_map() takes exactly one argument")
            return type(text)(formatter.vformat(text, (), args[0]))

        return functools.update_wrapper(checked, value)


def is_heavy(tree: nodes.Node) -> bool:
    """Whether evaluating a template may cost more than reading its inputs: it loops, calls,
    repeats, formats or filters with anything but a few plain filters."""
    for node in tree.find_all((*_HEAVY, nodes.Filter)):
        if not isinstance(node, nodes.Filter):
            return True
        if node.name not in _CHEAP_FILTERS or node.dyn_args or node.dyn_kwargs:
            return True
        arguments = [*node.args, *(pair.value for pair in node.kwargs)]
        if node.name not in ("default", "d") and not all(
                isinstance(arg, nodes.Const) for arg in arguments):
            return True
    return False

