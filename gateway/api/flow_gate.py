"""HTTP calls to a workflow with `concurrency` or `throttle`: admitted by the same keys as
its jobs, counted with them on every instance sharing the database.

A call's keys are rendered over its params as its run will see them (`held_keys`); a call
whose params do not fit is left to its run, which refuses them as it would anyway. The
store admits the call (`JobStore.admit_call`) while its concurrency key has room and its
throttle's period too; then the call runs, holding its key until it ends (at the latest
its run's time, plus a margin: a process that dies mid-call holds it no longer). A call
refused waits up to the workflow's `max_wait`, asking again as room may have opened, then
gets 429 `RATE_LIMITED` with `Retry-After`: a throttle's, when its next start opens; a full
concurrency key's, a second. A call whose throttle opens only after `max_wait` is refused
at once, and at most `MAX_WAITERS` calls of a key wait at once in a process. The
refusal says which limit, never the key: a key is made of a caller's values. Refusals are
counted for /metrics (`SKIPPED`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from gateway.core.errors import GatewayError, RateLimitedError
from gateway.core.ids import new_id
from gateway.runtime.flow_keys import SKIPPED, held_keys
from gateway.runtime.interpreter import HOLD_MARGIN_SECONDS, Interpreter
from gateway.runtime.model import Flow, Workflow
from gateway.storage.common.job_rows import CONCURRENCY_WAIT
from gateway.storage.contract import CallKeys

log = logging.getLogger("gateway.api")
ASK_AGAIN = 0.25  # seconds between two asks of a call waiting for a concurrency key
MAX_WAITERS = 64  # calls of one key waiting for room at once, per process; more: 429


class FlowGate:
    """Admits the HTTP calls of one workflow with `concurrency` or `throttle`."""

    def __init__(self, workflow: Workflow, flow: Flow, interpreter: Interpreter) -> None:
        self.workflow = workflow
        self.flow = flow
        self.interpreter = interpreter
        self.max_wait = flow.max_wait.total_seconds()
        # Calls of this process waiting for room now, by key (a caller flooding one key
        # holds back no other key's calls); a key no call waits for is not kept.
        self.waiters: dict[str, int] = {}

    @asynccontextmanager
    async def admitted(self, raw: Mapping[str, Any]) -> AsyncIterator[None]:
        """The call's run, within its keys' room; `RateLimitedError` when there is none
        (after `max_wait`)."""
        storage = self.interpreter.storage
        keys = await self.keys(raw)
        if storage is None or keys is None:
            yield
            return
        id = new_id(self.interpreter.clock())
        deadline = time.monotonic() + self.max_wait
        waiting = False
        key = keys.flow_key or keys.throttle_key or ""
        try:
            while True:
                now = self.interpreter.clock()
                until = now + timedelta(seconds=self.interpreter.timeout + HOLD_MARGIN_SECONDS)
                wait = await storage.jobs.admit_call(id, keys, now, until)
                if wait is None:
                    break
                left = deadline - time.monotonic()
                # A wait longer than a full concurrency key's guess is a throttle's, known:
                # past what is left, waiting is no use, and within it one sleep does. Shorter
                # waits are asked again every `ASK_AGAIN` seconds, by at most `MAX_WAITERS`
                # calls at once.
                known = wait > CONCURRENCY_WAIT
                if left <= 0 or (known and wait > left) or (
                        not waiting and self.waiters.get(key, 0) >= MAX_WAITERS):
                    raise self.refusal(keys, wait)
                if not waiting:
                    waiting, self.waiters[key] = True, self.waiters.get(key, 0) + 1
                await asyncio.sleep(min(left, wait if known else min(wait, ASK_AGAIN)))
        finally:
            if waiting:
                self.waiters[key] -= 1
                if not self.waiters[key]:
                    del self.waiters[key]
        try:
            yield
        finally:
            try:
                await storage.jobs.end_call(id, keys, self.interpreter.clock())
            except GatewayError as exc:  # its hold ends at `until` all the same
                log.warning("could not end the hold of a call to %s on its keys: %s",
                            self.workflow.name, exc.code)

    async def keys(self, raw: Mapping[str, Any]) -> CallKeys | None:
        """The call's keys; None when its params do not fit (its run refuses them)."""
        try:
            params = self.workflow.coerce(raw)
        except GatewayError:
            return None
        # (a key template reads only `params`: the loader saw to it)
        return await held_keys(self.interpreter, self.workflow.name, self.flow,
                               {"params": params})

    def refusal(self, keys: CallKeys, wait: float) -> RateLimitedError:
        name = self.workflow.name
        full = []
        if keys.flow_limit is not None:
            full.append(f"at most {keys.flow_limit} at once (concurrency)")
        if keys.throttle_limit is not None:
            full.append(f"at most {keys.throttle_limit} starts per "
                        f"{(keys.throttle_ms or 0) / 1000:g} s (throttle)")
        SKIPPED[(name, "refused")] += 1
        return RateLimitedError(
            f"Too many calls to {name} with the same key: it allows {' and '.join(full)}; "
            f"try again in {math.ceil(wait)} s", retry_after=max(1, math.ceil(wait)))
