"""`create_app()`: a Starlette application serving one registry, with its store's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import Receive, Scope, Send

from gateway.api import data_api, file_serving, meta, openapi, swagger, workflow_endpoints
from gateway.api.auth import Authenticator, credential
from gateway.api.workflow_endpoints import WorkflowRoutes, error_response
from gateway.compiler.loader import config_version, load
from gateway.config.diagnostics import render_text
from gateway.console import Console
from gateway.core.clock import Clock, utc_now
from gateway.core.encoding import encode
from gateway.core.errors import (
    ConfigError,
    ForbiddenError,
    GatewayError,
    NotFoundError,
    UnauthorizedError,
)
from gateway.core.logformat import ENV as LOG_FORMAT_ENV
from gateway.core.logformat import AccessLog, noted
from gateway.core.settings import with_environment
from gateway.runtime.accounts import Logins
from gateway.runtime.after_commit import settled
from gateway.runtime.flow_keys import SKIPPED
from gateway.runtime.forwarded import Proxies
from gateway.runtime.interpreter import Interpreter, Observe
from gateway.runtime.model import Registry
from gateway.runtime.services import Services
from gateway.scheduler import Scheduler, with_jobs
from gateway.server.metrics import CONTENT_TYPE as METRICS_TYPE
from gateway.server.metrics import Metrics, counting
from gateway.server.reload import RELOAD_ENV, reloading
from gateway.storage import Storage, TypeSpec, open_storage
from gateway.storage.retention import retain_forever, run_log_limits

CONFIG_ENV = "GATEWAY_CONFIG"
SCHEDULER_ENV = "GATEWAY_SCHEDULER"  # "off": `gateway serve --no-scheduler`
LIVE_ALIAS = "/version-live"  # Bubble's other URL of the live API: the same routes
SHUTDOWN_SECONDS = 5.0  # how long background tasks get to end when the app stops
log = logging.getLogger("gateway")


@dataclass(frozen=True, slots=True)
class Live:
    """What one config serves: swapped whole when the config is reloaded. A request in
    flight keeps the `Live` (its routes' closures) it started with."""

    registry: Registry
    interpreter: Interpreter
    auth: Authenticator
    version: str
    openapi: bytes  # the documents at /api/1.1/meta/openapi.json, swagger.json and meta
    swagger: bytes
    meta: bytes


def create_app(registry: Registry, storage: Storage | None = None,
               clock: Clock = utc_now, scheduler: bool = True, *,
               paths: Sequence[Path] = (), watch: bool = False,
               monotonic: Callable[[], float] = time.monotonic) -> Starlette:
    """The app for a compiled registry. The store (if any) is opened and closed with the
    app's lifespan; the registry's data types get their indexes when it opens. With
    `scheduler`, the lifespan runs the scheduler too (jobs, recurring events, triggers).
    With `paths`, SIGHUP reloads the config from them (and, with `watch`, any change to
    their files). `monotonic` is what the credential cache counts its seconds by."""
    metrics = Metrics() if registry.settings.metrics_enabled else None
    services = Services()  # shared by the interpreters of every config the app serves

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # One HTTP client and one mailer for every run of the process (`gateway.runtime.services`).
        async with services.running(registry.settings), store_lifespan(app):
            yield

    @contextlib.asynccontextmanager
    async def store_lifespan(app: Starlette) -> AsyncIterator[None]:
        # What was built at start (the compiled config, the libraries) lives as long as the
        # process: keep it out of the collector's way, so full collections under load stay
        # as cheap as a bare app's.
        gc.collect()
        gc.freeze()
        async with reloading(app, paths, watch, install):
            if storage is None:
                yield
                return
            storage.runs.configure(run_log_limits(registry.settings))
            await storage.open(storage_types(registry))
            stop = asyncio.Event()
            retention = asyncio.create_task(
                retain_forever(storage, registry.settings, clock, stop))
            jobs = None
            if scheduler:
                app.state.scheduler = Scheduler(app.state.interpreter, storage, clock)
                if metrics is not None:
                    metrics.jobs = app.state.scheduler.probe
                    metrics.flow = app.state.scheduler.flow_probe
                jobs = asyncio.create_task(app.state.scheduler.run(stop))
            elif metrics is not None:  # jobs are scheduled here, run elsewhere
                metrics.flow = lambda: (SKIPPED, None)
            try:
                yield
            finally:
                # Asked to end between two passes rather than cancelled in the middle of one:
                # a database driver may answer a cancel with an error of its own, which a
                # pass would log and go on from. Bounded all the same.
                stop.set()
                _, late = await asyncio.wait([retention], timeout=SHUTDOWN_SECONDS)
                if late:
                    retention.cancel()
                if jobs is not None:  # bounded by its own grace period (scheduler.grace)
                    await asyncio.gather(jobs, return_exceptions=True)
                # what runs handed on after their commits (e-mails, dropped files' bytes)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(settled(), SHUTDOWN_SECONDS)
                await storage.close()

    middleware = [Middleware(AccessLog)] if os.environ.get(LOG_FORMAT_ENV) == "json" else []
    handlers: dict[Any, Any] = {HTTPException: workflow_endpoints.http_exception,
                                Exception: workflow_endpoints.server_error}
    if metrics is not None:
        handlers = {kind: counting(handler, metrics.http) for kind, handler in handlers.items()}
    app = Gateway(lifespan=lifespan, middleware=middleware, exception_handlers=handlers)
    app.state.scheduler = None
    app.state.services = services
    app.state.logins = Logins()
    app.router.redirect_slashes = False  # a redirect would go to whatever `Host` said
    app.state.storage = storage
    app.state.clock = clock
    app.state.monotonic = monotonic
    app.state.metrics = metrics
    app.state.reload_error = None
    app.state.console = Console(registry.settings)
    if metrics is not None and storage is not None:
        runs = storage.runs
        metrics.queue_depth = lambda: runs.queued
    if metrics is not None and registry.settings.tracing_enabled:
        metrics.spans = lambda: None if services.tracing is None else \
            services.tracing.counts.shown()
    install(app, registry)
    return app


def install(app: Gateway, registry: Registry, version: str | None = None) -> None:
    """Serve `registry` from the next request on: one assignment of the routes' list."""
    storage: Storage | None = app.state.storage
    metrics: Metrics | None = app.state.metrics
    observe: Observe | None = None
    if metrics is not None:
        metrics.bind(registry.workflows)
        observe = metrics.observe
    if os.environ.get(LOG_FORMAT_ENV) == "json":
        observe = noted(observe)
    interpreter = with_jobs(Interpreter(registry, storage, app.state.clock, observe=observe))
    interpreter.services = app.state.services
    if interpreter.accounts is not None:  # failed log-ins are remembered across reloads
        interpreter.accounts.logins = app.state.logins
    auth = Authenticator(storage.keys if storage is not None else None, app.state.clock,
                         app.state.monotonic, accounts=interpreter.accounts,
                         records=storage.records if storage is not None else None)
    version = version or config_version(registry.files)
    live = Live(registry, interpreter, auth, version,
                encode(openapi.document(registry, version=version)),
                encode(swagger.document(registry, version=version)),
                encode(meta.listing(registry)))
    console: Console = app.state.console
    console.configure(registry.settings)
    # The workflows' routes first: nearly every request is one of theirs, and the router
    # tries its routes in order. They answer only paths under the workflows' prefix, which
    # no other route answers, so the order changes nothing else.
    api = _counted([*workflow_endpoints.routes(interpreter, auth), *_documents(),
                    *data_api.DataApi(interpreter, auth).routes()], metrics)
    served = [*api, _mount(LIVE_ALIAS, api),  # Bubble's other URL of the live API
              *_counted(file_serving.routes(interpreter), metrics),
              *_counted(console.routes() if registry.settings.console_enabled else [],
                        metrics)]
    own = _counted([Route("/healthz", healthz), Route("/readyz", readyz),
                    Route("/metrics", prometheus)], metrics)
    prefix = registry.settings.prefix
    app.state.live = live
    app.state.registry = registry
    app.state.interpreter = interpreter
    app.router.routes = [*([_mount(prefix, served)] if prefix else served), *own]
    settings = registry.settings
    app.proxies = Proxies(settings.trusted_proxies, settings.forwarded_header) \
        if settings.trusted_proxies else None
    if app.state.scheduler is not None:  # the scheduler runs the new config's jobs from now on
        app.state.scheduler.use(interpreter)


def _mount(path: str, routes: list[BaseRoute]) -> Mount:
    """`routes` under `path`, never redirecting a path with a slash more or less (a redirect
    would go to whatever `Host` said)."""
    return Mount(path, app=Router(routes, redirect_slashes=False))


def _counted(routes: list[BaseRoute], metrics: Metrics | None) -> list[BaseRoute]:
    """The routes, their responses counted by status class when metrics are on."""
    if metrics is None:
        return routes
    return [_counted_route(route, metrics.http) for route in routes]


def _counted_route(route: BaseRoute, counts: list[int]) -> BaseRoute:
    if isinstance(route, Route):
        return Route(route.path, counting(route.endpoint, counts), methods=route.methods,
                     name=route.name)
    if isinstance(route, WorkflowRoutes):
        return route.wrapped(lambda endpoint: counting(endpoint, counts))
    return route


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Whether the gateway serves (its database answers), its config's version and whether
    the last reload was refused. The reload's diagnostics (paths, workflows' names) and the
    count of workflows only to an admin key: anyone else gets the state."""
    state = request.app.state
    live: Live = state.live
    facts: dict[str, Any] = {"version": live.version,
                             "reload_refused": state.reload_error is not None}
    status, code = "ready", 200
    try:
        if state.storage is not None:
            await state.storage.ping()
    except GatewayError as exc:
        log.warning("not ready: the database does not answer: %s", exc.message)
        status, code = "unavailable", 503
    if code == 200 and await _is_admin(request, live):
        facts |= {"workflows": len(live.registry.workflows),
                  "reload_error": state.reload_error}
    return JSONResponse({"status": status, **facts}, code)


async def _is_admin(request: Request, live: Live) -> bool:
    """Whether the request carries an admin key (a wrong or missing one is no error here:
    the caller gets what anyone gets)."""
    token = credential(request)
    if token is None:
        return False
    try:
        identity = await live.auth.identify(token)
    except GatewayError:  # the database cannot say
        return False
    return identity is not None and identity.kind == "admin"


def _documents() -> list[BaseRoute]:
    """The API's descriptions: who may read them is `openapi.public` (admin keys only by
    default: the names of workflows and types are not for everyone)."""
    return [Route(openapi.PATH, _document(lambda live: live.openapi)),
            Route(swagger.PATH, _document(lambda live: live.swagger)),
            Route(meta.PATH, _document(lambda live: live.meta))]


def _document(content: Callable[[Live], bytes]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        live: Live = request.app.state.live
        refused = await _refused(request, live, live.registry.settings.openapi_public)
        if refused is not None:
            return refused
        return Response(content(live), media_type="application/json")

    return endpoint


async def prometheus(request: Request) -> Response:
    live: Live = request.app.state.live
    metrics: Metrics | None = request.app.state.metrics
    if metrics is None:
        return error_response(NotFoundError("Metrics are disabled (metrics.enabled)"))
    refused = await _refused(request, live, live.registry.settings.metrics_public)
    if refused is not None:
        return refused
    return Response(metrics.exposition(), media_type=METRICS_TYPE)


async def _refused(request: Request, live: Live, public: bool) -> Response | None:
    """None when the caller may read an admin-only document; else the error response."""
    if public:
        return None
    identity = await live.auth.identify(credential(request))
    if identity is None:
        return error_response(UnauthorizedError(
            "The API token is not valid (unknown, revoked or expired)"))
    if identity.kind == "anonymous":
        return error_response(UnauthorizedError("This document requires an admin API key"))
    if identity.kind != "admin":
        return error_response(ForbiddenError("This document requires an admin API key"))
    return None


class Gateway(Starlette):
    """The Starlette app, with its trusted `proxies` (replaced whole when the config is
    reloaded), whose forwarded client and scheme every request is seen with from the start
    (`gateway.runtime.forwarded`)."""

    proxies: Proxies | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        proxies = self.proxies
        if proxies is not None and scope["type"] == "http":
            proxies.apply(scope)
        await super().__call__(scope, receive, send)


def storage_types(registry: Registry) -> list[TypeSpec]:
    return list(registry.data_types.values())


def config_paths() -> Sequence[Path]:
    return [Path(p) for p in os.environ.get(CONFIG_ENV, "workflows.d").split(os.pathsep)]


def app_from_environment() -> Starlette:
    """The factory `gateway serve` hands to uvicorn (so that every worker builds its own)."""
    paths = config_paths()
    try:
        registry = load(paths)
    except ConfigError as exc:  # a worker started by a reload of several: said, located
        log.error("the config is invalid; this worker does not start:\n%s",
                  render_text(exc.diagnostics))
        raise
    settings = with_environment(registry.settings)
    registry = dataclasses.replace(registry, settings=settings)
    return create_app(registry, open_storage(settings.database),
                      scheduler=os.environ.get(SCHEDULER_ENV, "on") != "off", paths=paths,
                      watch=os.environ.get(RELOAD_ENV) == "1")
