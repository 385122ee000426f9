"""Runs a compiled workflow on plain data: parameters, an identity, request facts.

It never sees HTTP: the HTTP layer, `gateway run` and (later) the scheduler all call `run`.
Every run is recorded, whatever its outcome (see `reporting`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gateway.core.clock import Clock, utc_now
from gateway.core.errors import (
    GatewayError,
    NotRunError,
    RedirectRefusedError,
    RunError,
    StepFailedError,
    StorageUnavailableError,
    UpstreamError,
)
from gateway.core.ids import new_id
from gateway.core.redaction import redact, secret_forms
from gateway.runtime import checkpoints, reading
from gateway.runtime.accounts import Accounts
from gateway.runtime.after_commit import hand_on
from gateway.runtime.context import (
    ANONYMOUS,
    MIN_SECRET_LENGTH,
    Identity,
    Reply,
    RunContext,
    new_scope,
    reply_bytes,
)
from gateway.runtime.display_keys import displayed_types, keyed_reply
from gateway.runtime.file_values import file_fields, forget_dropped, kept_params, signed_links
from gateway.runtime.model import Registry, Step, Workflow
from gateway.runtime.origin import HTTP, NO_CALL, Call, Origin
from gateway.runtime.privacy import Scans
from gateway.runtime.redirect import error_target
from gateway.runtime.reporting import Observe as Observe  # where the app imports it from
from gateway.runtime.reporting import Reports, declared
from gateway.runtime.run_spans import close_run, database_span, open_run, step_reason
from gateway.runtime.services import Services
from gateway.runtime.zones import zone_of
from gateway.storage.common.transaction import JOINED
from gateway.storage.contract import Transaction
from gateway.templates import budget, templating
from gateway.templates.environment import reset_zone, set_zone
from gateway.templates.templating import Compiled

if TYPE_CHECKING:
    from gateway.storage import Storage

# Called with a run's context when it ends in success, with every record change it made
# (`ctx.changes`): where database triggers and jobs are enqueued.
Commit = Callable[[RunContext], Awaitable[None]]
# What `Interpreter.perform` runs in place of a workflow's steps.
Operation = Callable[[RunContext], Awaitable[Reply]]

HOLD_MARGIN_SECONDS = 5.0  # past the run's own timeout, SQLite's writer takes it back


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended: a reply, or an error to render. `run_id` is set either way."""

    run_id: str
    reply: Reply | None = None
    error: GatewayError | None = None
    # The reply's `data` as JSON, when measuring it against the response limit wrote it
    # already: written once, not once to measure and again to send.
    encoded: bytes | None = None
    # Its `on_commit` hooks ran and committed with it (a job's run: its job ended there).
    committed: bool = False
    # A failed run of a workflow with an `error_redirect`: the URL it redirects to (allowed
    # already), with the error's `statusCode` and `message` to add.
    redirect: Reply | None = None


class Interpreter:
    """Runs workflows of one registry against one store."""

    def __init__(self, registry: Registry, storage: Storage | None = None,
                 clock: Clock = utc_now, on_commit: Sequence[Commit] = (),
                 observe: Observe | None = None) -> None:
        self.registry = registry
        self.storage = storage
        self.clock = clock
        self.on_commit = tuple(on_commit)
        self.accounts = (Accounts(storage.users, registry.settings, clock)
                         if storage is not None else None)
        self.timeout = registry.settings.run_timeout.total_seconds()
        self.limits = budget.limits_of(registry.settings)
        self.hidden = frozenset(form for v in registry.settings.secrets.values()
                                if len(v) >= MIN_SECRET_LENGTH for form in secret_forms(v))
        self.reports = Reports(storage, self.hidden, registry.settings.run_log_sample_success,
                               observe)
        self.secrets = dict(registry.settings.secrets)  # templates cannot change it (sandbox)
        self.data_types = registry.data_types
        self.displayed = displayed_types(registry)  # the types replies key by display
        # the file fields of replies' records, whose private files are signed
        self.file_fields = file_fields(registry.data_types, self.displayed)
        # what templates see as `option_sets`: each set's options, in order
        self.options = {name: s.options for name, s in registry.option_sets.items()}
        self.scans = Scans(registry.settings.privacy_scan_concurrency)
        self.services = Services()  # started by the process's owner (the app's lifespan)

    async def run(self, workflow: Workflow, raw: Mapping[str, Any], *, origin: Origin = HTTP,
                  identity: Identity = ANONYMOUS, call: Call = NO_CALL,
                  coerced: dict[str, Any] | None = None) -> RunResult:
        """Run `workflow` on `raw` parameters for `identity`: started as `origin` says (over
        HTTP unless told otherwise), asked for by `call` (an HTTP call's facts); `coerced`
        is `workflow.coerce(raw)`, if made already."""
        now = self.clock()
        ctx = RunContext(run_id=new_id(now), workflow=workflow.name, now=now,
                         call_event=self.call_event, clock=self.clock, storage=self.storage,
                         identity=identity, data_types=self.data_types,
                         ignore_privacy_rules=workflow.ignore_privacy_rules,
                         source=origin.source, accounts=self.accounts,
                         viewer=reading.viewer(self.registry, self.scans, workflow, identity),
                         hidden=self.hidden,
                         settings=self.registry.settings, services=self.services,
                         job=origin.job, schedule_depth=origin.schedule_depth,
                         fence=call.fence, client=call.client)
        request, names = call.request, origin.names
        started = time.perf_counter()
        budget.start_run(self.limits, self.timeout)
        params: dict[str, Any] = {}
        reply: Reply | None = None
        error: GatewayError | None = None
        encoded: bytes | None = None
        committed = False
        zoned = None  # set only for a workflow with a `timezone`
        tracing = self.services.tracing
        traced = None if tracing is None else open_run(tracing, ctx, origin)
        try:
            if workflow.timezone is not None:
                ctx.zone = zone_of(workflow, request, names)
                zoned, coerced = set_zone(ctx.zone), None  # its dates are read in the zone
            params = workflow.coerce(raw) if coerced is None else coerced
            if ctx.job is not None:  # what earlier runs of its job did (none: no query)
                await checkpoints.load(ctx)
            if workflow.file_params:  # uploads are kept before the steps see their paths
                params = await kept_params(self.services.files, workflow.file_params, params,
                                           now)
            if workflow.may_wait or workflow.record_params:
                transaction = self.begin()  # what the run writes commits at its end, or not
                try:
                    async with asyncio.timeout(self.timeout):  # loading records is part of it
                        params = await self.load_records(workflow, params, ctx)
                        reply = self.outgoing(ctx, await self.execute(
                            workflow, ctx, self.scope(ctx, params, request, names)), True)
                        if self.file_fields and reply is not None and reply.data is not None:
                            reply = await self.signed(ctx, reply)  # private files: signed
                        encoded = self.check_size(reply, True)  # measures what is sent
                        # within the run's time, like any write
                        committed = await self.commit_all(ctx, transaction)
                    if ctx.after_commit:
                        hand_on(ctx.after_commit)
                finally:
                    await transaction.rollback()  # unless it committed
            else:
                reply = await self.execute(workflow, ctx, self.scope(ctx, params, request,
                                                                     names))
                if self.displayed:  # no records to cut: only keys to change, if asked
                    reply = self.outgoing(ctx, reply, False)
                encoded = self.check_size(reply, False)
        except Exception as exc:  # noqa: BLE001 - a run always ends recorded, never as a crash
            error = self.failure(exc)
        except BaseException:  # cancelled (a stopping worker, a stopping server)
            if traced is not None:
                traced.close({"gateway.run.status": "cancelled"}, error="cancelled")
            raise
        finally:
            if zoned is not None:
                reset_zone(zoned)
        logged = params if params else declared(workflow, raw)
        hidden = self.hidden | ctx.passwords if ctx.passwords else self.hidden
        if error is not None and hidden:
            error.message = redact(error.message, hidden)  # what the caller and every log see
        if traced is not None:
            close_run(traced, workflow, params, error, hidden)
        self.reports.report(ctx, workflow, started, logged, reply, error, hidden)
        if error is not None and workflow.error_redirect is not None:
            error, redirect = error_target(workflow.error_redirect, error, request,
                                           self.registry.settings)
            return RunResult(ctx.run_id, Reply(data={}), error, redirect=redirect)
        return RunResult(ctx.run_id, reply or Reply(data={}), error,
                         encoded if error is None else None, committed and error is None)

    async def perform(self, name: str, operation: Operation, *, params: Mapping[str, Any],
                      identity: Identity = ANONYMOUS, source: str = "data_api") -> RunResult:
        """A run made of one operation rather than a workflow's steps (a Data API call):
        timed out, committed (database triggers see its changes) and recorded like any other
        run, as `name`. Its reads go through the privacy rules unless `identity` is admin."""
        now, unit = self.clock(), Workflow(source, name, (), ())
        ctx = RunContext(run_id=new_id(now), workflow=name, now=now, call_event=self.call_event,
                         clock=self.clock, storage=self.storage, identity=identity,
                         data_types=self.data_types,
                         source=source, accounts=self.accounts,
                         viewer=reading.viewer(self.registry, self.scans, unit, identity),
                         hidden=self.hidden, settings=self.registry.settings,
                         services=self.services)
        started, reply, error = time.perf_counter(), None, None
        tracing = self.services.tracing
        traced = None if tracing is None else open_run(tracing, ctx, None)
        transaction = self.begin()
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await operation(ctx)
                    await self.commit_all(ctx, transaction)
                if ctx.after_commit:
                    hand_on(ctx.after_commit)
            finally:
                await transaction.rollback()  # unless it committed
        except Exception as exc:  # noqa: BLE001 - a run always ends recorded, never as a crash
            error = self.failure(exc)
        except BaseException:  # cancelled
            if traced is not None:
                traced.close({"gateway.run.status": "cancelled"}, error="cancelled")
            raise
        hidden = self.hidden | ctx.passwords if ctx.passwords else self.hidden
        if error is not None and ctx.passwords:
            error.message = redact(error.message, hidden)
        if traced is not None:
            close_run(traced, unit, {}, error, hidden)
        self.reports.report(ctx, unit, started, params, reply, error, hidden)
        return RunResult(ctx.run_id, reply or Reply(data={}), error)

    def failure(self, exc: Exception) -> GatewayError:
        """How a run that raised `exc` ends: its own error, a timeout, or an unexpected one
        (the cause kept for the server log)."""
        if isinstance(exc, GatewayError):
            return exc
        if isinstance(exc, TimeoutError):
            return RunError(f"the run took longer than {self.timeout:g} s and was stopped")
        error = RunError(f"the run failed unexpectedly: {type(exc).__name__}")
        error.__cause__ = exc
        return error

    def scope(self, ctx: RunContext, params: dict[str, Any], request: Mapping[str, Any] | None,
              names: Mapping[str, Any] | None = None) -> dict[str, Any]:
        scope = new_scope(ctx, params, self.secrets, request, self.options)
        return scope if names is None else {**scope, **names}

    async def evaluate(self, compiled: Compiled, scope: dict[str, Any]) -> Any:
        """A template, within the run's limits: one that may take real work runs off the
        event loop, so that the server keeps answering meanwhile."""
        if not templating.heavy(compiled):
            return compiled(scope)
        return await budget.run_off_loop(compiled, scope, self.limits)

    def begin(self) -> Transaction:
        """A run's storage work as one transaction (see `storage.common.transaction`); it may hold
        SQLite's writer a little longer than the run may last."""
        if self.storage is None:
            return JOINED
        return self.storage.begin(self.timeout + HOLD_MARGIN_SECONDS)

    async def load_records(self, workflow: Workflow, params: dict[str, Any],
                           ctx: RunContext) -> dict[str, Any]:
        """`params` with the records its record parameters name, read (through the
        privacy rules) in one batch: a span of its own when tracing."""
        if not workflow.record_params:
            return params
        tracing = self.services.tracing
        if tracing is None:
            return await reading.load_records(self.storage, self.registry,
                                              workflow.record_params, params, ctx.viewer)
        opened = tracing.client("SELECT", database_span(self.storage, "SELECT"))
        failed = None
        try:
            return await reading.load_records(self.storage, self.registry,
                                              workflow.record_params, params, ctx.viewer)
        except Exception as exc:
            failed = type(exc).__name__
            raise
        finally:
            opened.close({"gateway.db.records": len(workflow.record_params),
                          "error.type": failed}, error=failed)

    async def commit_all(self, ctx: RunContext, transaction: Transaction) -> bool:
        """`commit`, then the run's transaction: a span of its own when tracing."""
        tracing = self.services.tracing
        if tracing is None:
            committed = await self.commit(ctx)
            await transaction.commit()
            return committed
        opened = tracing.client("COMMIT", database_span(self.storage, "COMMIT"))
        changes, jobs, failed = len(ctx.changes), len(ctx.jobs), None
        try:
            committed = await self.commit(ctx)
            await transaction.commit()
            return committed
        except Exception as exc:
            failed = type(exc).__name__
            raise
        finally:
            opened.close({"gateway.db.changes": changes, "gateway.db.jobs": jobs,
                          "error.type": failed}, error=failed)

    async def commit(self, ctx: RunContext) -> bool:
        """The run succeeded: hand what it changed and scheduled to whoever listens (in
        the run's transaction, which commits once they are done); whether there was any."""
        if not (ctx.changes or ctx.jobs):
            return False
        if ctx.fence is not None:  # first: it may refuse the whole transaction
            await ctx.fence()
        for hook in self.on_commit:
            await hook(ctx)
        await forget_dropped(ctx)
        return True

    def outgoing(self, ctx: RunContext, reply: Reply | None,
                 holds_records: bool) -> Reply | None:
        """`reply` as the caller gets it: its records cut to what the caller sees (records
        reach a reply only through steps that wait or record parameters), then keyed by
        their fields' displays when the settings ask (Bubble's "use field display for key
        names"): after the cut, since privacy rules speak of fields by name."""
        if reply is None:
            return None
        if holds_records and reply.data is not None and ctx.viewer.privacy:
            reply = replace(reply, data=ctx.viewer.shown(reply.data))
        return keyed_reply(reply, self.displayed) if self.displayed else reply

    async def signed(self, ctx: RunContext, reply: Reply) -> Reply:
        """`reply` with the private files of its records as signed links."""
        files = self.services.files
        if files is None or self.storage is None:
            return reply
        return replace(reply, data=await signed_links(reply.data, self.file_fields, files,
                                                      self.storage, ctx.viewer))

    def check_size(self, reply: Reply | None, holds_records: bool) -> bytes | None:
        return reply_bytes(reply, holds_records, self.registry.settings.max_response_bytes)

    async def execute(self, workflow: Workflow, ctx: RunContext,
                      scope: dict[str, Any]) -> Reply | None:
        if workflow.only_when is not None and not await self.evaluate(workflow.only_when,
                                                                      scope):
            status = 200 if workflow.return_200_if_condition_fails else 400
            raise NotRunError(f"The condition for the workflow {workflow.name} is not met. "
                              "Workflow won't run", status)
        default: Reply | None = None  # what a sign-up or log-in answers when nothing is returned
        run_step = self.step if self.services.tracing is None else self.traced_step
        for step in workflow.steps:
            result = await run_step(step, ctx, scope)
            if isinstance(result, Reply):
                return result
            if step.id:
                scope["steps"][step.id] = result
            if step.action.replies_by_default and result is not None:
                default = Reply(data=result)
        return default

    async def step(self, step: Step, ctx: RunContext, scope: dict[str, Any]) -> Any:
        started = time.perf_counter()
        action = step.action
        entry: dict[str, Any] = {"id": step.id, "action": action.name, "status": "success"}
        ctx.steps.append(entry)
        restore = ctx.restore  # None unless this is a job's run
        try:
            if restore is not None:
                ctx.place = place = f"{ctx.prefix}{step.index + 1}"
                if restore and (done := checkpoints.restored(restore, place, step,
                                                             entry)) is not None:
                    return done.result
            if step.only_when is not None and not await self.evaluate(step.only_when, scope):
                entry.update(status="skipped", reason="only_when was false")
                return None
            args = step.args
            # (inline rather than through `evaluate`: most steps' arguments are light)
            result = await action.execute(ctx, args(scope) if not templating.heavy(args) else
                                          await self.evaluate(args, scope))
            note = action.note(result)
            if note is not None:
                entry["reason"] = note
            if action.outbound and restore is not None:
                await checkpoints.save(ctx, step, result)
            return result
        except StepFailedError as exc:
            entry.update(status="failed", reason=exc.message)
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of a step is handled here
            return self.step_error(step, entry, exc)
        finally:
            entry["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)

    async def traced_step(self, step: Step, ctx: RunContext, scope: dict[str, Any]) -> Any:
        """`step`, within a span of its own (current while it runs: its outbound calls'
        spans go under it) that says how it ended: its status, why it was skipped, its
        attempts, its error's code. Not its error's message, which may quote a caller's
        values: that stays in the run log."""
        tracing = self.services.tracing
        assert tracing is not None
        opened = tracing.open(f"step {step.index + 1} {step.action.name}", {
            "gateway.step.index": step.index + 1, "gateway.step.id": step.id or None,
            "gateway.step.action": step.action.name})
        failed: str | None = None
        try:
            return await self.step(step, ctx, scope)
        except GatewayError as exc:
            failed = exc.code
            raise
        except BaseException as exc:
            failed = type(exc).__name__
            raise
        finally:
            entry = ctx.steps[-1]  # this step's (a custom event's steps have their own list)
            opened.close({"gateway.step.status": entry.get("status"),
                          "gateway.step.reason": step_reason(entry),
                          "gateway.step.attempts": entry.get("attempts"),
                          "error.type": failed}, error=failed)

    def step_error(self, step: Step, entry: dict[str, Any], exc: Exception) -> None:
        message = exc.message if isinstance(exc, GatewayError) else f"{type(exc).__name__}: {exc}"
        if step.continue_on_error:
            entry.update(status="skipped", reason=f"error ignored (on_error: continue): {message}")
            return None
        entry.update(status="failed", reason=message)
        if isinstance(exc, GatewayError) and (exc.status < 500 or isinstance(
                exc, StorageUnavailableError | UpstreamError | RedirectRefusedError)):
            raise exc  # the caller's, retry later, or a redirect refused (its own code)
        label = f"step {step.index + 1} ({step.action.name})"
        # The innermost location wins: a step of a custom event, not the step that called it.
        location = exc.location if isinstance(exc, RunError) and exc.location else step.location
        raise RunError(f"{label} failed: {message}", location) from exc

    async def call_event(self, caller: RunContext, name: str, raw: Mapping[str, Any]) -> Any:
        """`trigger_event`: run a custom event inline and give back its return values."""
        event = self.registry.events[name]
        if caller.depth + 1 > self.registry.settings.max_event_depth:
            raise RunError(f"custom event '{name}' would nest deeper than "
                           f"{self.registry.settings.max_event_depth} levels")
        try:
            params = await reading.load_records(self.storage, self.registry,
                                                event.record_params, event.coerce(raw),
                                                caller.viewer)
        except GatewayError as exc:
            raise RunError(f"custom event '{name}': {exc.message}") from exc
        ctx = replace(caller, workflow=name, depth=caller.depth + 1, steps=[],
                      prefix=f"{caller.place}.")
        scope = self.scope(ctx, params, None)
        try:
            reply = await self.execute(event, ctx, scope)
        finally:
            caller.steps[-1]["steps"] = ctx.steps  # kept in the run log, failed or not
        data = reply.data if reply is not None else {}
        return data if not isinstance(data, dict) else {**data}

