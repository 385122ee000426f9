"""What one template evaluation may spend: operations, time and the size of what it builds.

A template runs inside a `Budget` (a context variable, so it follows the evaluation into a
worker thread). The sandbox ticks the budget on every loop iteration, call and filter, and
measures what each of them builds; past a limit it raises `LimitError`, which the template
layer reports as a `TemplateError`. Nothing is interrupted from outside: the checks are
cooperative, so a template stops at the next tick after its deadline.

A run sets its deadline once (`start_run`); no evaluation inside it goes past that deadline,
whatever its own `timeout`.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.core.settings import Settings

from jinja2.exceptions import SecurityError

from gateway.core.errors import TemplateError


class LimitError(SecurityError):
    """A template went past one of its limits."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The `limits.template_*` settings, in the units the checks use."""

    timeout: float = 1.0  # seconds of one evaluation (limits.template_timeout)
    max_bytes: int = 1_048_576  # of text (limits.max_template_bytes)
    max_items: int = 100_000  # in lists and mappings, nested ones counted (max_template_items)
    max_operations: int = 1_000_000  # loop iterations and calls (max_template_operations)


DEFAULT_LIMITS = Limits()


def limits_of(settings: Settings) -> Limits:
    """The `limits.template_*` settings as `Limits`."""
    return Limits(timeout=settings.template_timeout.total_seconds(),
                  max_bytes=settings.max_template_bytes, max_items=settings.max_template_items,
                  max_operations=settings.max_template_operations)


# The run under way: its limits and the `time.monotonic()` past which none of its templates
# goes on. A plain tuple: it is made for every run.
_Run = tuple[Limits, float]
_RUN: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("template_run", default=None)


def start_run(limits: Limits, seconds: float) -> None:
    """The templates of the run under way (this task) use `limits` and end before `seconds`
    from now."""
    _RUN.set((limits, time.monotonic() + seconds))


class Budget:
    """The operations and time left to one evaluation."""

    __slots__ = ("limits", "deadline", "left", "late")

    def __init__(self, limits: Limits) -> None:
        run = _RUN.get()
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout
        self.late = (f"the template ran longer than {limits.timeout:g} s "
                     "(limits.template_timeout)")
        if run is not None and run[1] < self.deadline:
            self.deadline = run[1]
            self.late = "the template ran past the run's deadline (limits.run_timeout)"
        self.left = limits.max_operations

    def tick(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise LimitError(f"the template did more than {self.limits.max_operations} "
                             "operations (limits.max_template_operations)")
        if time.monotonic() > self.deadline:
            raise LimitError(self.late)


_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "template_budget", default=None)


def limits() -> Limits:
    """The limits in force: the evaluation's, else the run's, else the defaults."""
    budget = _BUDGET.get()
    return budget.limits if budget is not None else run_limits()


def tick() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick()


def active() -> bool:
    return _BUDGET.get() is not None


# The budget of the evaluation running (None outside one), and the limits in force outside
# one: plain calls, for the guard every filter goes through.
current = _BUDGET.get


def run_limits() -> Limits:
    """The limits of the run under way, else the defaults."""
    run = _RUN.get()
    return run[0] if run is not None else DEFAULT_LIMITS


@contextmanager
def bounded(given: Limits | None = None) -> Iterator[Budget]:
    """One evaluation's budget, for the code run inside the block."""
    budget = Budget(given or limits())
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def measure(value: Any, limit: Limits | None = None) -> Any:
    """`value`, once it is known not to be larger than the limits allow (`limit`: those in
    force, when the caller has them at hand).

    Nested values are counted along every path, so a list that holds itself twice, twenty
    levels deep, counts as the million items it prints as. The walk stops at the limit."""
    if limit is None:
        limit = limits()
    if value.__class__ is str and len(value) <= limit.max_bytes:
        return value  # by far the most common value: a text within the limit
    items = text = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            text += len(item)
        elif isinstance(item, int):
            text += item.bit_length() // 8
        elif isinstance(item, list | tuple | dict | set | frozenset):
            items += len(item)
            if items > limit.max_items:
                raise LimitError(f"the template built more than {limit.max_items} items "
                                 "(limits.max_template_items)")
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                stack.extend(item)
        if text > limit.max_bytes:
            raise LimitError(f"the template built more than {limit.max_bytes} bytes of text "
                             "(limits.max_template_bytes)")
    return value


def check_size(size: int | float, what: str = "bytes of text") -> None:
    """Refuse, before building it, a value that would hold `size` bytes (or items)."""
    limit = limits()
    if what == "items":
        if size > limit.max_items:
            raise LimitError(f"the template would build {size:g} items (more than "
                             f"{limit.max_items}, limits.max_template_items)")
    elif size > limit.max_bytes or math.isnan(size):
        raise LimitError(f"the template would build {size:g} bytes of text (more than "
                         f"{limit.max_bytes}, limits.max_template_bytes)")


# Evaluations that may take real work run here, off the event loop, so that the server
# keeps answering while one of them runs to its deadline. Few threads: each evaluation ends
# within its timeout, and more threads would only share the same cores.
_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="template")


def _run_bounded(compiled: Callable[[Any], Any], scope: Any, given: Limits) -> Any:
    with bounded(given):
        try:
            return measure(compiled(scope))
        except LimitError as exc:
            raise TemplateError(str(exc)) from exc


async def run_off_loop(compiled: Callable[[Any], Any], scope: Any, given: Limits) -> Any:
    """`compiled(scope)` in a worker thread, inside a budget of `given`."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_THREADS, context.run, _run_bounded, compiled, scope,
                                      given)
