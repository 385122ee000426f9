"""The registry as Starlette routes; requests to parameters; outcomes and errors to responses.

Every error a caller can see is rendered here, in one shape:
`{"statusCode": N, "body": {"status": CODE, "message": ...}}`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette._utils import get_route_path
from starlette.datastructures import URLPath
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound, Route
from starlette.types import Receive, Scope, Send

from gateway.api import samples
from gateway.api.auth import API_TOKEN, Authenticator, admitted, credential, is_bearer
from gateway.api.detection import as_yaml
from gateway.api.flow_gate import FlowGate
from gateway.api.request_bodies import (
    OFF_LOOP_BYTES,
    close_uploads,
    parse_body,
    parse_multipart,
    parse_signed_body,
    parse_simple_body,
    read_body,
    upload_limit,
)
from gateway.core.errors import (
    GatewayError,
    MethodNotAllowedError,
    NotFoundError,
    shown,
)
from gateway.runtime.coercion import gather
from gateway.runtime.context import ANONYMOUS, Identity
from gateway.runtime.envelope import Rendered, render_error, render_result
from gateway.runtime.interpreter import Interpreter, RunResult
from gateway.runtime.model import ROUTE_PREFIX, Workflow
from gateway.runtime.origin import Call
from gateway.storage.contract import RateCounter
from gateway.webhooks.guard import Guard, LocalRates, raw_headers

# Every method reaches the endpoint, which answers a wrong one with the JSON 405.
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
log = logging.getLogger("gateway.http")
Endpoint = Callable[[Request], Awaitable[Response]]


class _Reply(Response):
    """A rendered outcome as a response, its raw headers built directly: Starlette's own
    constructor parses and rebuilds them, which every request of a run would pay for."""

    def __init__(self, rendered: Rendered) -> None:
        body = rendered.body if isinstance(rendered.body, bytes) else rendered.body.encode()
        self.status_code = rendered.status
        self.background = None
        media = rendered.media_type
        if media is not None and media.startswith("text/") and "charset=" not in media:
            media += "; charset=utf-8"
        raw = []
        if rendered.status in (204, 304):  # no body, nor a length: a body would be read as
            body = b""  # the start of the connection's next answer
        else:
            raw.append((b"content-length", str(len(body)).encode()))
            if media is not None:
                raw.append((b"content-type", media.encode("latin-1")))
        raw.extend((k.lower().encode("latin-1"), v.encode("latin-1"))
                   for k, v in rendered.headers.items())
        self.body = body
        self.raw_headers = raw


def response(rendered: Rendered) -> Response:
    return _Reply(rendered)


def error_response(error: GatewayError, run_id: str | None = None) -> Response:
    return response(render_error(error, run_id))


def reply_response(result: RunResult) -> Response:
    return response(render_result(result))


def request_facts(request: Request, body: bytes) -> dict[str, Any]:
    """What templates see as `request`: the credential the call came with (the `api_token`
    query parameter, an `Authorization: Bearer` header) is left out. Read from the ASGI
    scope as Starlette's `Request` would read it, without building its objects (URL, query
    parameters, headers) where the scope alone gives the same."""
    scope = request.scope
    query = {} if not scope.get("query_string") else \
        gather((k, v) for k, v in request.query_params.multi_items() if k != API_TOKEN)
    headers = {}
    for key, value in scope["headers"]:
        name, text = key.decode("latin-1"), value.decode("latin-1")
        if name != "authorization" or not is_bearer(text):
            headers[name] = text
    path = scope["path"]
    if "?" in path or "#" in path or "\\" in path:
        path = request.url.path  # which escapes those
    client = scope.get("client")
    return {
        "method": scope["method"], "path": path, "headers": headers,
        "query": query, "body": body.decode("utf-8", "replace"),
        "client": client[0] if client else None,
    }


def workflow_endpoint(workflow: Workflow, interpreter: Interpreter,
                      auth: Authenticator, rates: RateCounter | None = None) -> Endpoint:
    query_names = frozenset(p.name for p in workflow.params
                            if p.in_query or workflow.method == "GET")
    methods = {workflow.method, "HEAD"} if workflow.method == "GET" else {workflow.method}
    settings = interpreter.registry.settings
    uploads = frozenset(p.name for p in workflow.file_params)
    limit = upload_limit(settings) if uploads else settings.max_body_bytes
    # verify, idempotency, rate_limit (`gateway.webhooks.guard`): None for most workflows
    guard = None if workflow.hooks is None else Guard(workflow, interpreter, rates or LocalRates())
    # the headers the guard reads (its signature's, its key's), and the guard the run goes
    # through when there is an idempotency key (otherwise it goes straight to the interpreter)
    reads = guard.reads if guard is not None else frozenset()
    run_guard = guard if guard is not None and guard.hooks.idempotency_key is not None \
        else None
    parse = parse_signed_body if guard is not None and guard.hooks.verify is not None \
        else parse_simple_body
    flow = workflow.flow
    gate = FlowGate(workflow, flow, interpreter) if flow is not None and flow.admits else None

    async def endpoint(request: Request) -> Response:
        if request.method not in methods:
            return error_response(MethodNotAllowedError(
                f"The workflow {workflow.name} only accepts {workflow.method}", workflow.method))
        try:
            token = credential(request)  # checked before the body is read
            identity = (admitted(workflow, ANONYMOUS) if token is None else
                        await auth.admit(workflow, token))
            client = peer[0] if (peer := request.scope.get("client")) else None
            if guard is not None and guard.hooks.rate_requests and (early := await guard.limit(
                    identity, client, token)) is not None:
                return response(early)
            body = await read_body(request, limit)
            seen = raw_headers(request.scope["headers"], reads) if reads else {}
            if guard is not None and (early := guard.verify(seen, body, identity)) is not None:
                return response(early)  # before any parameter is parsed
            raw = ({} if workflow.method != "POST" else parse(request, body)
                   if len(body) <= OFF_LOOP_BYTES else
                   await asyncio.to_thread(parse, request, body))
            if raw is None:
                raw = await parse_multipart(request, body, uploads)
        except ClientDisconnect:
            return gone(request, workflow)
        except GatewayError as exc:
            return error_response(exc)
        if query_names:
            query = gather(request.query_params.multi_items())
            raw.update({k: v for k, v in query.items() if k in query_names and k != API_TOKEN})
        facts = request_facts(request, body) if workflow.uses_request else None
        call = Call(facts, client)
        try:
            if gate is not None:  # concurrency or throttle: the call's keys must have room
                async with gate.admitted(raw):
                    return await run(raw, identity, call, seen)
            return await run(raw, identity, call, seen)
        except GatewayError as exc:  # refused by its keys (429), or they could not be made
            return error_response(exc)
        finally:
            if uploads:
                close_uploads(raw)

    async def run(raw: dict[str, Any], identity: Identity, call: Call,
                  seen: Mapping[str, str]) -> Response:
        if run_guard is not None:
            return response(await run_guard.run(raw, identity, call, seen))
        return reply_response(await interpreter.run(workflow, raw, identity=identity,
                                                    call=call))

    return endpoint


def initialize_endpoint(workflow: Workflow, interpreter: Interpreter,
                        auth: Authenticator) -> Endpoint:
    """`.../<name>/initialize`: the parameters detected from a sample request, as YAML to
    paste into the workflow (admin keys only; nothing runs); while a detection window is
    open for the workflow, the request is kept as its sample instead (see `samples`)."""
    admin_only = dataclasses.replace(workflow, auth="admin")
    limit = interpreter.registry.settings.max_body_bytes

    async def endpoint(request: Request) -> Response:
        try:
            window = await samples.open_window(interpreter, workflow.name)
            if window is not None:
                return response(await samples.keep_sample(request, interpreter, auth, window,
                                                          workflow))
        except ClientDisconnect:
            return gone(request, workflow)
        except GatewayError as exc:
            # Refused while detecting: the answer it would get otherwise (405, then 401 for
            # anything but an admin key), so that probing tells nothing of the window.
            if request.method != "POST":
                return error_response(MethodNotAllowedError(
                    f"{workflow.name}/initialize only accepts POST", "POST"))
            try:
                await auth.admit(admin_only, credential(request))
            except GatewayError as refusal:
                return error_response(refusal)
            return error_response(exc)
        if request.method != "POST":
            return error_response(MethodNotAllowedError(
                f"{workflow.name}/initialize only accepts POST", "POST"))
        try:
            await auth.admit(admin_only, credential(request))
            raw = await parse_body(request, await read_body(request, limit))
        except ClientDisconnect:
            return gone(request, workflow)
        except GatewayError as exc:
            return error_response(exc)
        raw.update({k: v for k, v in gather(request.query_params.multi_items()).items()
                    if k != API_TOKEN})
        return Response(as_yaml(raw), media_type="application/yaml")

    return endpoint


def gone(request: Request, workflow: Workflow) -> Response:
    """The client went away before its body arrived: no run started, nobody reads an answer."""
    client = request.client.host if request.client else "?"
    log.info("%s closed the connection before sending the whole body (%s %s)", client,
             request.method, workflow.name)
    return Response(status_code=400)


def sample_endpoint(interpreter: Interpreter, auth: Authenticator) -> Endpoint:
    """`.../<name>/initialize` for a name no exposed workflow has: a detection window's
    sample, or the 404 of an unknown workflow."""
    async def endpoint(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            window = await samples.open_window(interpreter, name)
            if window is None:
                raise samples.unknown(name)
            return response(await samples.keep_sample(
                request, interpreter, auth, window, interpreter.registry.workflows.get(name)))
        except ClientDisconnect:
            return Response(status_code=400)
        except GatewayError:
            # Whatever refused it (a method, a body, a key): the 404 of an unknown
            # workflow, as without a window, so that probing tells nothing of one.
            return error_response(samples.unknown(name))

    return endpoint


async def not_found(request: Request) -> Response:
    # Unknown and unexposed workflows get the same answer, so names do not leak.
    name = request.path_params.get("name", "")
    return error_response(NotFoundError(f"No workflow named {shown(name)} is exposed"
                                        if name else "Not found"))


class WorkflowRoutes(BaseRoute):
    """Every exposed workflow's endpoint as one route of Starlette's router: the requests
    that make up nearly all of a gateway's traffic are matched by one dictionary lookup on
    the path (with or without one trailing slash), where a `Route` per workflow would try a
    regular expression each, and answered without `Route`'s wrapping of each request. Every
    method reaches the endpoint, which answers a wrong one with the JSON 405. An error the
    endpoint does not answer itself goes up to the app's exception handlers, as from any
    route."""

    def __init__(self, endpoints: Mapping[str, Endpoint]) -> None:
        self.endpoints = dict(endpoints)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http":
            path = get_route_path(scope)
            endpoint = self.endpoints.get(path)
            # `wf/<name>/` as Bubble takes it (one slash: `wf/<name>//` is no name), a slash
            # written as one: `wf/<name>%2F` names a segment `<name>/`, which no name is.
            if endpoint is None and path.endswith("/") and \
                    scope.get("raw_path", b"/").endswith(b"/"):
                endpoint = self.endpoints.get(path[:-1])
            if endpoint is not None:
                return Match.FULL, {"endpoint": endpoint}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)  # the endpoints have no names to look up

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint: Endpoint = scope["endpoint"]
        reply = await endpoint(Request(scope, receive, send))
        await reply(scope, receive, send)

    def wrapped(self, wrap: Callable[[Endpoint], Endpoint]) -> WorkflowRoutes:
        """The same route, each endpoint wrapped (metrics count their responses)."""
        return WorkflowRoutes({path: wrap(endpoint) for path, endpoint in self.endpoints.items()})


def traced(endpoint: Endpoint, interpreter: Interpreter, route: str) -> Endpoint:
    """`endpoint` within a server span per request, while the process traces (see
    `gateway.tracing`): its answer's status, the caller's trace continued if trusted."""
    services = interpreter.services

    async def endpoint_traced(request: Request) -> Response:
        tracing = services.tracing
        if tracing is None:
            return await endpoint(request)
        opened = tracing.request(request.scope, route)
        status = 500  # unless it answers
        try:
            response = await endpoint(request)
            status = response.status_code
            return response
        finally:
            tracing.responded(opened, status)

    return endpoint_traced


def routes(interpreter: Interpreter, auth: Authenticator) -> list[BaseRoute]:
    """The exposed workflows' endpoints, their `/initialize`, and the catch-alls that answer
    any other path under the workflows' prefix with the JSON 404. With tracing on, each
    request to a workflow is a span."""
    storage, settings = interpreter.storage, interpreter.registry.settings
    rates = storage.rates if settings.rate_limits_shared and storage else LocalRates()
    exposed = interpreter.registry.exposed()
    endpoints = {f"{ROUTE_PREFIX}/{wf.name}": workflow_endpoint(wf, interpreter, auth, rates)
                 for wf in exposed}
    if settings.tracing_enabled or interpreter.services.tracing is not None:
        # (tracing is read when the process starts: a reload does not turn it on or off)
        endpoints = {path: traced(endpoint, interpreter, settings.prefix + path)
                     for path, endpoint in endpoints.items()}
    return [WorkflowRoutes(endpoints),
            *(Route(f"{ROUTE_PREFIX}/{wf.name}/initialize",
                    initialize_endpoint(wf, interpreter, auth), methods=ALL_METHODS)
              for wf in exposed),
            *([Route(ROUTE_PREFIX + "/{name}/initialize", sample_endpoint(interpreter, auth),
                     methods=ALL_METHODS)] if storage is not None else []),
            # The bare prefix too: Starlette would otherwise redirect it, to whatever `Host` said.
            Route(ROUTE_PREFIX, not_found, methods=ALL_METHODS),
            Route(ROUTE_PREFIX + "/{name:path}", not_found, methods=ALL_METHODS)]


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    errors: Mapping[int, type[GatewayError]] = {404: NotFoundError, 405: MethodNotAllowedError}
    error_class = errors.get(exc.status_code, GatewayError)
    error = error_class(exc.detail if exc.status_code != 404 else "Not found")
    error.status = exc.status_code
    return error_response(error)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(GatewayError("The server failed to handle the request"))
