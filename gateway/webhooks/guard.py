"""What an API workflow with `verify`, `idempotency` or `rate_limit` does around its run.

The HTTP layer hands a `Guard` plain data (the headers it `reads`, decoded, the raw body,
who is calling) at three points: `limit` before the body is read, `verify` before the
parameters are parsed, and, for a workflow with an idempotency key, `run` in place of the
interpreter's own run. Workflows without hooks get no `Guard` and pay nothing. No web
framework here.

Idempotency: the key (a SHA-256 of the key template's value, per workflow) is claimed in
the database before the run, atomically across instances. The claim holds for the run's
time limit (`limits.run_timeout`, its lease): a run that crashed frees its key then, not
at the end of the ttl. A run that answers below 500 stores its answer, replayed for the
ttl with `Idempotent-Replayed: true`; one that fails with 500 or more gives its key up, so
that the sender's retry runs again.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from gateway.core.encoding import escape
from gateway.core.errors import (
    GatewayError,
    InProgressError,
    InvalidDataError,
    KeyTakenError,
    RateLimitedError,
    StorageError,
)
from gateway.core.ids import new_id
from gateway.runtime.context import Identity, RunContext
from gateway.runtime.envelope import Rendered, render_error, render_result
from gateway.runtime.forwarded import network
from gateway.runtime.interpreter import Interpreter, RunResult
from gateway.runtime.model import Hooks, Workflow
from gateway.runtime.origin import Call, Fence
from gateway.storage.contract import IdempotencyStore, RateCounter
from gateway.templates import budget, templating
from gateway.webhooks import signature

log = logging.getLogger("gateway.hooks")
REPLAYED = "Idempotent-Replayed"
# The most callers the in-process counters of one workflow track at once; past it, counters
# of windows that ended are dropped first, then the oldest.
MAX_TRACKED = 100_000


class _Owners:
    """This process's prefix of claim owners and its counter, made anew in a forked child: a
    claim's owner (the prefix and the next count) is unique across processes and instances."""

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self.prefix = new_id() + "-"
        self.counter = itertools.count(1)


_OWNERS = _Owners()
os.register_at_fork(after_in_child=_OWNERS.renew)


class LocalRates:
    """Fixed-window counters in this process (`RateCounter` without a database), each
    workflow's apart: a flood of callers to one workflow never makes room by dropping
    another's counters (whose windows, of another length, are numbered otherwise)."""

    def __init__(self, most: int = MAX_TRACKED) -> None:
        self.most = most
        self.counters: dict[str, dict[str, tuple[int, int]]] = {}

    async def hit(self, scope: str, who: str, bucket: int, expires_at: datetime) -> int:
        counters = self.counters.get(scope)
        if counters is None:
            counters = self.counters[scope] = {}
        known = counters.get(who)
        count = known[1] + 1 if known is not None and known[0] == bucket else 1
        if known is None and len(counters) >= self.most:
            self._shrink(counters, bucket)
        counters[who] = (bucket, count)
        return count

    async def purge_counters(self, now: datetime) -> int:
        return 0  # bounded by `most` instead

    def _shrink(self, counters: dict[str, tuple[int, int]], bucket: int) -> None:
        for who in [who for who, (at, _) in counters.items() if at < bucket]:
            del counters[who]
        if len(counters) >= self.most:  # all current: drop the oldest half
            for who in list(counters)[: self.most // 2]:
                del counters[who]


def _scope(workflow: str, identity: Identity) -> str:
    """Whose keys a key is among: the workflow's anonymous callers (a webhook's sender),
    or one user's, or one API key's. A key never replays one caller's answer to another
    (a user could otherwise send another's key and read their answer)."""
    if identity.kind == "anonymous":
        return workflow
    who = identity.user_id if identity.kind == "user" else identity.token_hash
    return f"{workflow} {identity.kind}:{who or ''}"  # no workflow's name holds a space


def raw_headers(scope_headers: Iterable[tuple[bytes, bytes]],
                wanted: frozenset[bytes] | None = None) -> dict[str, str]:
    """ASGI headers as lower-case names to values (a repeated header keeps its last); with
    `wanted` (lower-case names), only those."""
    if wanted is None:
        return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope_headers}
    found = {}
    for key, value in scope_headers:
        # ASGI servers give names in lower case: `lower()` only for one that is not
        if key in wanted or (not key.islower() and (key := key.lower()) in wanted):
            found[key.decode("latin-1")] = value.decode("latin-1")
    return found


def refused(interpreter: Interpreter, workflow: Workflow, error: GatewayError,
            identity: Identity) -> Rendered:
    """A request turned away before any step: recorded in the run log like any run."""
    now = interpreter.clock()
    ctx = RunContext(run_id=new_id(now), workflow=workflow.name, now=now,
                     call_event=interpreter.call_event, identity=identity, source="http")
    interpreter.reports.report(ctx, workflow, time.perf_counter(), {}, None, error)
    return render_error(error, ctx.run_id)


class Guard:
    """The hooks of one workflow, bound to an interpreter (its store, secrets and clock)."""

    def __init__(self, workflow: Workflow, interpreter: Interpreter,
                 rates: RateCounter) -> None:
        assert workflow.hooks is not None
        self.workflow = workflow
        self.hooks: Hooks = workflow.hooks
        self.interpreter = interpreter
        self.rates = rates
        self._secret: str | None = None
        # the headers its signature scheme reads
        self.signed_by = frozenset(name.encode("latin-1") for name in (
            signature.header_names(self.hooks.verify) if self.hooks.verify else ()))
        self.lease = timedelta(seconds=interpreter.timeout)
        self.ttl = max(self.hooks.idempotency_ttl, self.lease)
        # runs in a transaction of their own, the only ones with writes to fence
        self._writes = workflow.may_wait or bool(workflow.record_params)
        self._key_heavy = self.hooks.idempotency_key is not None and \
            templating.heavy(self.hooks.idempotency_key)
        # the headers `verify` and a key that is one of them read, the only ones decoded
        # (once for both, by the HTTP layer)
        self.reads = self.signed_by | frozenset(
            {self.hooks.idempotency_header.encode("latin-1")}
            if self.hooks.idempotency_header else ())

    # --- rate limit -------------------------------------------------------------------

    async def limit(self, identity: Identity, client: str | None,
                    credential: str | None) -> Rendered | None:
        """A 429 when the caller is over the workflow's `rate_limit` (not recorded as a
        run: a flood would otherwise fill the run log)."""
        hooks = self.hooks
        if not hooks.rate_requests:
            return None
        who = "ip:" + network(client)
        if hooks.rate_by == "user" and identity.user_id:
            who = "user:" + identity.user_id
        elif hooks.rate_by == "key" and credential:
            who = "key:" + hashlib.sha256(credential.encode()).hexdigest()[:32]
        per = hooks.rate_per.total_seconds()
        now = self.interpreter.clock().timestamp()
        bucket = int(now // per)
        ends = (bucket + 1) * per
        try:
            count = await self.rates.hit(self.workflow.name, who, bucket,
                                         self.interpreter.clock() + timedelta(seconds=ends - now))
        except StorageError as exc:  # counting is best effort: an outage lets calls through
            log.warning("rate limit of %s not counted: %s", self.workflow.name, exc.message)
            return None
        if count <= hooks.rate_requests:
            return None
        wait = max(1, int(ends - now + 0.999))
        return render_error(RateLimitedError(
            f"More than {hooks.rate_requests} calls to {self.workflow.name} in "
            f"{per:g} s; try again in {wait} s", wait))

    # --- signature --------------------------------------------------------------------

    def secret(self) -> str:
        """The signing secret, from its template over `secrets` (evaluated once)."""
        if self._secret is None:
            assert self.hooks.secret is not None
            value = self.hooks.secret({"secrets": self.interpreter.secrets})
            self._secret = "" if value is None else str(value)
        return self._secret

    def verify(self, headers: Mapping[str, str], body: bytes,
               identity: Identity) -> Rendered | None:
        """A recorded 401 unless the body is signed with the workflow's secret (`headers`:
        the request's that `reads` names, from `raw_headers`)."""
        spec = self.hooks.verify
        if spec is None:
            return None
        try:
            signature.verify(spec, self._secret or self.secret(), headers, body,
                             self.interpreter.clock().timestamp())
        except GatewayError as exc:
            return refused(self.interpreter, self.workflow, exc, identity)
        return None

    # --- idempotency ------------------------------------------------------------------

    async def run(self, raw: dict[str, Any], identity: Identity, call: Call,
                  headers: Mapping[str, str] | None = None) -> Rendered:
        """The run, behind the idempotency key when there is one (`call`: the request's
        facts and the caller's address; `headers`: the request's that `reads` names, for a
        key that is one of them)."""
        interpreter, workflow = self.interpreter, self.workflow
        storage = interpreter.storage
        compiled = self.hooks.idempotency_key
        store = storage.idempotency if storage is not None else None
        facts = call.request
        if compiled is None or store is None:
            return render_result(await self._run(raw, identity, call))
        try:
            params = workflow.coerce(raw)
        except GatewayError:  # the run refuses the parameters, and says why
            return render_result(await self._run(raw, identity, call))
        if self.hooks.idempotency_header:
            key = self._header_key(headers or {})
        elif not self._key_heavy:
            key = self._key(compiled, params, facts)
        else:
            key = await self._heavy_key(compiled, params, facts)
        if isinstance(key, GatewayError):
            return refused(interpreter, workflow, key, identity)
        now = interpreter.clock()
        scope = _scope(workflow.name, identity)
        owner = _OWNERS.prefix + str(next(_OWNERS.counter))
        try:
            claim = await store.claim(scope, key, owner, now, now + self.lease, now + self.ttl)
        except GatewayError as exc:  # the database cannot say (503): recorded, as a refusal
            return refused(interpreter, workflow, exc, identity)
        state = claim.state
        if state == "done":
            replayed = dict(claim.headers)
            media = replayed.pop("content-type", None)
            replayed[REPLAYED] = "true"
            return Rendered(claim.status, claim.body, media, replayed)
        if state == "running":
            return refused(interpreter, workflow, InProgressError(
                "A request with the same idempotency key is still running; retry later"),
                identity)
        finished = False

        try:
            fence = self._fence(store, scope, key, owner) if self._writes else None
            result = await self._run(raw, identity, replace(call, fence=fence), params)
            rendered = render_result(result)
            if isinstance(result.error, KeyTakenError):
                finished = True  # the key is the other request's now, and so is its answer
                return rendered
            if rendered.status < 500:
                body = rendered.body
                kept = dict(rendered.headers)
                if rendered.media_type is not None:
                    kept["content-type"] = rendered.media_type
                data = body if isinstance(body, bytes) else body.encode()
                # handed over: the key is the answer's, whatever happens to the wait
                wait = store.finish(scope, key, owner, rendered.status, kept, data,
                                    now + self.ttl)
                finished = True
                if wait is not None:
                    await wait
            return rendered
        finally:
            if not finished:
                await store.release(scope, key, owner)

    def _fence(self, store: IdempotencyStore, scope: str, key: str, owner: str) -> Fence:
        async def fence() -> None:  # the run's writes are kept only while it holds the key
            await store.fence(scope, key, owner, self.interpreter.clock() + self.lease)
        return fence

    async def _run(self, raw: dict[str, Any], identity: Identity, call: Call,
                   params: dict[str, Any] | None = None) -> RunResult:
        return await self.interpreter.run(self.workflow, raw, identity=identity, call=call,
                                          coerced=params)

    def _key(self, compiled: Any, params: dict[str, Any],
             facts: Mapping[str, Any] | None) -> str | GatewayError:
        """The key (hashed) of the request, or why there is none: its template, evaluated
        here when it takes no real work."""
        budget.start_run(self.interpreter.limits, self.interpreter.timeout)
        try:
            value = compiled({"params": params, "request": facts or {}})
        except GatewayError as exc:
            return self._no_key(exc.message)
        return self._hashed(value)

    def _header_key(self, headers: Mapping[str, str]) -> str | GatewayError:
        """The key from its header (the last, if repeated), decoded as `request.headers`
        decodes it, so that it hashes the same as the template would."""
        name = self.hooks.idempotency_header
        found = headers.get(name)
        if found is None:
            return self._no_key(f"no {name} header")
        return self._hashed(found)

    async def _heavy_key(self, compiled: Any, params: dict[str, Any],
                         facts: Mapping[str, Any] | None) -> str | GatewayError:
        budget.start_run(self.interpreter.limits, self.interpreter.timeout)
        try:
            value = await self.interpreter.evaluate(
                compiled, {"params": params, "request": facts or {}})
        except GatewayError as exc:
            return self._no_key(exc.message)
        return self._hashed(value)

    def _hashed(self, value: Any) -> str | GatewayError:
        if value is None or value == "":
            return self._no_key()
        return hashlib.sha256(str(value).encode()).hexdigest()

    def _no_key(self, why: str = "") -> GatewayError:
        reason = f": {escape(why)}" if why else ""
        return InvalidDataError(
            f"The request has no idempotency key for {self.workflow.name}{reason}")
