"""`create_app()`: a Starlette application serving one registry, with its store's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from gateway import data_api, http
from gateway.auth import Authenticator
from gateway.clock import Clock, utc_now
from gateway.errors import GatewayError
from gateway.interpreter import Interpreter
from gateway.loader import load
from gateway.model import Registry
from gateway.settings import Settings, with_environment
from gateway.storage import RunLog, RunLogLimits, Storage, TypeSpec, open_storage
from gateway.storage.interface import UserStore

CONFIG_ENV = "GATEWAY_CONFIG"
MIN_PURGE_SECONDS = 1.0
SHUTDOWN_SECONDS = 5.0  # how long background tasks get to end when the app stops
log = logging.getLogger("gateway")


def create_app(registry: Registry, storage: Storage | None = None,
               clock: Clock = utc_now) -> Starlette:
    """The app for a compiled registry. The store (if any) is opened and closed with the
    app's lifespan; the registry's data types get their indexes when it opens."""
    interpreter = Interpreter(registry, storage, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # One HTTP client and one mailer for every run of the process (`gateway.services`).
        await interpreter.services.start(registry.settings)
        try:
            async with store_lifespan(app):
                yield
        finally:
            await interpreter.services.stop()

    @contextlib.asynccontextmanager
    async def store_lifespan(app: Starlette) -> AsyncIterator[None]:
        # What was built at start (the compiled config, the libraries) lives as long as the
        # process: keep it out of the collector's way, so full collections under load stay
        # as cheap as a bare app's.
        gc.collect()
        gc.freeze()
        if storage is None:
            yield
            return
        storage.runs.configure(run_log_limits(registry.settings))
        await storage.open(storage_types(registry))
        stop = asyncio.Event()
        retention = asyncio.create_task(retain_forever(storage, registry.settings, clock, stop))
        try:
            yield
        finally:
            # Asked to end between two passes rather than cancelled in the middle of one: a
            # database driver may answer a cancel with an error of its own, which a pass
            # would log and go on from. Bounded all the same.
            stop.set()
            _, late = await asyncio.wait([retention], timeout=SHUTDOWN_SECONDS)
            if late:
                retention.cancel()
            await storage.close()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            if storage is not None:
                await storage.ping()
        except GatewayError as exc:
            log.warning("not ready: the database does not answer: %s", exc.message)
            return JSONResponse({"status": "unavailable"}, 503)
        return JSONResponse({"status": "ready", "workflows": len(registry.workflows)})

    auth = Authenticator(storage.keys if storage is not None else None, clock,
                         accounts=interpreter.accounts,
                         records=storage.records if storage is not None else None)
    endpoints = http.Endpoints(interpreter, auth)
    routes: list[BaseRoute] = [*endpoints.routes(),
                               *data_api.DataApi(interpreter, auth).routes(),
                               Route("/healthz", healthz),
                               Route("/readyz", readyz)]
    app = Gateway(endpoints, routes=routes, lifespan=lifespan, exception_handlers={
        HTTPException: http.http_exception, Exception: http.server_error})
    app.router.redirect_slashes = False  # a redirect would go to whatever `Host` said
    app.state.registry = registry
    app.state.interpreter = interpreter
    return app


class Gateway(Starlette):
    """The Starlette app, with the workflows' endpoints answered before its router (see
    `http.Endpoints`)."""

    def __init__(self, endpoints: http.Endpoints, **options: Any) -> None:
        super().__init__(**options)
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.endpoints.find(scope)
        if endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await http.serve_endpoint(endpoint, scope, receive, send)


async def retain_forever(storage: Storage, settings: Settings, clock: Clock,
                         stop: asyncio.Event) -> None:
    """The retention task: once every `run_log.purge_interval`, delete runs past their
    retention (then the oldest beyond `run_log.max_rows` and `max_bytes`) and users' tokens
    past their lifetime or idle lapse; until `stop` is set."""
    interval = max(settings.run_log_purge_interval.total_seconds(), MIN_PURGE_SECONDS)
    while not stop.is_set():
        await purge_runs_once(storage.runs, settings, clock)
        await purge_tokens_once(storage.users, settings, clock)
        await purge_keys_once(storage, clock)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def purge_runs_once(runs: RunLog, settings: Settings, clock: Clock) -> int:
    """One pass of the retention task; returns how many runs it deleted."""
    deleted = 0
    try:
        deleted = await runs.purge_runs(clock(), settings.run_retention,
                                        settings.failed_run_retention)
        if settings.run_log_max_rows is not None or settings.run_log_max_bytes is not None:
            deleted += await runs.trim_runs(settings.run_log_max_rows, settings.run_log_max_bytes)
        if deleted:
            log.info("deleted %d run(s) past their retention or the run log's size", deleted)
    except GatewayError as exc:
        log.warning("could not purge old runs: %s", exc.message)
    return deleted


async def purge_tokens_once(users: UserStore, settings: Settings, clock: Clock) -> int:
    now = clock()
    try:
        return await users.purge_tokens(now, now - settings.idle_lapse)
    except GatewayError as exc:
        log.warning("could not purge old tokens: %s", exc.message)
        return 0


async def purge_keys_once(storage: Storage, clock: Clock) -> int:
    """Idempotency keys past their ttl and rate counters of windows that ended."""
    now = clock()
    try:
        return (await storage.idempotency.purge_keys(now)
                + await storage.rates.purge_counters(now))
    except GatewayError as exc:
        log.warning("could not purge idempotency keys: %s", exc.message)
        return 0


def run_log_limits(settings: Settings) -> RunLogLimits:
    return RunLogLimits(settings.run_log_max_queue,
                        settings.run_log_flush_timeout.total_seconds())


def storage_types(registry: Registry) -> list[TypeSpec]:
    return list(registry.data_types.values())


def config_paths() -> Sequence[Path]:
    return [Path(p) for p in os.environ.get(CONFIG_ENV, "workflows.d").split(os.pathsep)]


def app_from_environment() -> Starlette:
    """The factory `gateway serve` hands to uvicorn (so that every worker builds its own)."""
    registry = load(config_paths())
    settings = with_environment(registry.settings)
    registry = dataclasses.replace(registry, settings=settings)
    return create_app(registry, open_storage(settings.database))
