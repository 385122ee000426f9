"""Flow control keys (a workflow's `concurrency`, `throttle`, `debounce` and `singleton`):
a key template rendered over what a run will see (a job's params, a trigger's `before` and
`after`, an HTTP call's params), prefixed with the workflow's name, so that the keys of
two workflows never meet. A key longer than `MAX_KEY` characters keeps its start and a
hash of the whole. A key that fails to render, or renders empty, is refused (400
`INVALID_DATA`): a run without its key would run unguarded.

`SKIPPED` counts, for /metrics, what flow control kept from running in this process.
"""

from __future__ import annotations

import collections
import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gateway.core.encoding import dumps_lenient
from gateway.core.errors import GatewayError, InvalidDataError
from gateway.runtime.model import Flow
from gateway.storage.contract import CallKeys
from gateway.templates.templating import Compiled

if TYPE_CHECKING:
    from gateway.runtime.interpreter import Interpreter

MAX_KEY = 200  # characters of a rendered key kept as they are
# What flow control kept from running in this process, by workflow and why: jobs skipped
# by a `singleton` key, jobs written over the one waiting with their `debounce` key, HTTP
# calls refused (429) by a full `concurrency` key or `throttle`. One for the process, not
# one per interpreter, so that a reload of the config does not set it back.
SKIPPED: collections.Counter[tuple[str, str]] = collections.Counter()


async def held_keys(interpreter: Interpreter, workflow: str, flow: Flow,
                    scope: dict[str, Any]) -> CallKeys:
    """The keys of `flow` a run holds while it runs or starts (its `concurrency` and
    `throttle`), rendered in `scope`: what a job of `workflow` carries, and what an HTTP
    call to it is admitted by."""
    found = CallKeys(workflow)
    if flow.concurrency is not None:
        found = replace(found, flow_key=await render_key(
            interpreter, workflow, "concurrency", flow.concurrency.key, scope),
            flow_limit=flow.concurrency.limit)
    if flow.throttle is not None:
        found = replace(found, throttle_key=await render_key(
            interpreter, workflow, "throttle", flow.throttle.key, scope),
            throttle_limit=flow.throttle.limit,
            throttle_ms=max(1, int(flow.throttle.per.total_seconds() * 1000)))
    return found


async def render_key(interpreter: Interpreter, workflow: str, control: str,
                     template: Compiled, scope: dict[str, Any]) -> str:
    """One flow control key of `workflow` (`control` names it in errors), as stored: the
    workflow's name, then `template` rendered in `scope` (`bounded_key`)."""
    try:
        value = await interpreter.evaluate(template, scope)
    except GatewayError as exc:
        raise InvalidDataError(
            f"the {control} key of '{workflow}' could not be made from the job's "
            f"params: {exc.message}") from exc
    except Exception as exc:  # noqa: BLE001 - a template's own error, said plainly
        raise InvalidDataError(
            f"the {control} key of '{workflow}' could not be made from the job's "
            f"params: {type(exc).__name__}: {exc}") from exc
    key = value if isinstance(value, str) else "" if value is None else dumps_lenient(value)
    if not key.strip():
        raise InvalidDataError(
            f"the {control} key of '{workflow}' is empty for the job's params: "
            "a job needs a key (give every job one, e.g. a default in the template)")
    return f"{workflow}:{bounded_key(key)}"


def bounded_key(key: str) -> str:
    """A rendered key as stored: as it is up to `MAX_KEY` characters; longer, its start
    and a hash of the whole (two long keys that differ anywhere stay two keys)."""
    if len(key) <= MAX_KEY:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{key[:MAX_KEY - 33]}#{digest}"


def shown_key(key: str) -> str:
    """A stored key as a run log says it: without its workflow's name, quoted."""
    return repr(key.partition(":")[2][:80])
