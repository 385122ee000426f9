"""Bubble's Data API as Starlette routes: `/api/1.1/obj/<type>[/<id>]` and `.../bulk`.

Only data types with `api: {expose: true}` answer; an unexposed type gets the same 404 as an
unknown one. Requests become the plain values `data_operations` works on; its operations run
as recorded runs, and their outcomes and errors are rendered here in Bubble's shapes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.api import data_operations
from gateway.api.auth import API_TOKEN, Authenticator, credential
from gateway.api.request_bodies import parse_body, read_body, upload_limit
from gateway.api.workflow_endpoints import ALL_METHODS, error_response, response
from gateway.core.encoding import encode
from gateway.core.errors import (
    DataApiError,
    GatewayError,
    MethodNotAllowedError,
    NotFoundError,
    RefusedError,
    UnauthorizedError,
)
from gateway.core.redaction import short_repr
from gateway.files.uploads import without_contents
from gateway.runtime.context import Identity, Reply, RunContext
from gateway.runtime.envelope import Rendered, public_error, render_error
from gateway.runtime.interpreter import Interpreter, RunResult
from gateway.runtime.param import FILE_TYPES
from gateway.storage.contract import TypeSpec

PREFIX = "/api/1.1/obj"
BULK_TYPE = "text/plain"
MAX_LOGGED = 200  # characters of a caller's value kept in the run log
Handler = Callable[[Request, TypeSpec, Identity], Awaitable[Response]]


class DataApi:
    """The Data API of one registry's exposed data types."""

    def __init__(self, interpreter: Interpreter, auth: Authenticator) -> None:
        self.interpreter = interpreter
        self.auth = auth
        registry = interpreter.registry
        self.types = {url: registry.data_types[name] for url, name in registry.data_api.items()}
        self.limit = registry.settings.max_body_bytes
        # a type with file fields takes a body that carries a file (in base64)
        self.file_limit = upload_limit(registry.settings)

    def routes(self) -> list[BaseRoute]:
        if not self.types or self.interpreter.storage is None:
            return []
        return [Route(PREFIX + "/{type}", self.collection, methods=ALL_METHODS),
                Route(PREFIX + "/{type}/bulk", self.bulk, methods=ALL_METHODS),
                Route(PREFIX + "/{type}/{id}", self.thing, methods=ALL_METHODS)]

    async def collection(self, request: Request) -> Response:
        return await self._serve(request, {"GET": self._search, "POST": self._create})

    async def bulk(self, request: Request) -> Response:
        return await self._serve(request, {"POST": self._bulk})

    async def thing(self, request: Request) -> Response:
        return await self._serve(request, {"GET": self._get, "PATCH": self._patch,
                                           "PUT": self._put, "DELETE": self._delete})

    async def _serve(self, request: Request, handlers: Mapping[str, Handler]) -> Response:
        name = request.path_params["type"]
        spec = self.types.get(name)
        try:
            if spec is None:
                raise NotFoundError(f"Type not found: {data_operations.printable(name)} is not "
                                    "exposed on the Data API")
            handler = handlers.get(request.method)
            if handler is None:
                allowed = ", ".join(handlers)
                raise MethodNotAllowedError(f"{request.url.path} accepts {allowed}", allowed)
            identity = await self.auth.identify(credential(request))
            if identity is None:
                raise UnauthorizedError("The API token is not valid (unknown, revoked or "
                                        "expired)")
            return await handler(request, spec, identity)
        except ClientDisconnect:
            return Response(status_code=400)
        except GatewayError as exc:
            return error_response(exc)

    async def _run(self, name: str, spec: TypeSpec, identity: Identity,
                   params: Mapping[str, Any],
                   operation: Callable[[RunContext], Awaitable[Reply]]) -> Response:
        result = await self.interpreter.perform(
            f"obj/{name}", operation, params={k: _logged(v) for k, v in params.items()},
            identity=identity)
        return _rendered(result)

    async def _get(self, request: Request, spec: TypeSpec, identity: Identity) -> Response:
        id = request.path_params["id"]
        return await self._run(spec.name, spec, identity, {"id": id},
                               lambda ctx: data_operations.get_one(ctx, spec, id))

    async def _search(self, request: Request, spec: TypeSpec, identity: Identity) -> Response:
        raw = {k: v for k, v in request.query_params.items() if k != API_TOKEN and v != ""}

        async def search(ctx: RunContext) -> Reply:  # a refused query is a recorded run too
            q = data_operations.query(
                spec, _json_param(raw, "constraints", []), _sort(raw),
                _whole(raw, "limit", data_operations.MAX_LIMIT), _whole(raw, "cursor", 0),
                _flag(raw, "exclude_remaining"), ctx.settings.data_api_display_keys)
            return await data_operations.search(ctx, spec, q)

        return await self._run(spec.name, spec, identity, raw, search)

    async def _create(self, request: Request, spec: TypeSpec, identity: Identity) -> Response:
        fields, refused = await self._fields(request, spec)

        async def create(ctx: RunContext) -> Reply:  # a body that does not parse is recorded
            if refused is not None:
                raise refused
            return await data_operations.create(ctx, spec, fields)

        return await self._run(spec.name, spec, identity, fields, create)

    async def _patch(self, request: Request, spec: TypeSpec, identity: Identity) -> Response:
        return await self._change(request, spec, identity, replace=False)

    async def _put(self, request: Request, spec: TypeSpec, identity: Identity) -> Response:
        return await self._change(request, spec, identity, replace=True)

    async def _change(self, request: Request, spec: TypeSpec, identity: Identity, *,
                      replace: bool) -> Response:
        id = request.path_params["id"]
        fields, refused = await self._fields(request, spec)

        async def change(ctx: RunContext) -> Reply:
            if refused is not None:
                raise refused
            return await data_operations.change(ctx, spec, id, fields, replace=replace)

        return await self._run(spec.name, spec, identity, {"id": id, **fields}, change)

    async def _fields(self, request: Request, spec: TypeSpec
                      ) -> tuple[dict[str, Any], GatewayError | None]:
        """The body's fields; or, for a body that does not parse, the error its run ends with
        (and what the run log keeps of it: its start, as text)."""
        limit = self.file_limit if any(f.type in FILE_TYPES for f in spec.fields.values()) \
            else self.limit
        body = await read_body(request, limit)
        try:
            return await parse_body(request, body), None
        except GatewayError as exc:
            return {"body": body[:MAX_LOGGED].decode("utf-8", "replace")}, exc

    async def _delete(self, request: Request, spec: TypeSpec, identity: Identity) -> Response:
        id = request.path_params["id"]
        return await self._run(spec.name, spec, identity, {"id": id},
                               lambda ctx: data_operations.delete(ctx, spec, id))

    async def _bulk(self, request: Request, spec: TypeSpec, identity: Identity) -> Response:
        media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        body = await read_body(request, self.limit)

        async def bulk(ctx: RunContext) -> Reply:  # a refused body is a recorded run too
            if media != BULK_TYPE:
                raise DataApiError("Bulk create requires the Content-Type text/plain, with one "
                                   "JSON object per line")
            return await data_operations.bulk(ctx, spec, _lines(body))

        return await self._run(spec.name, spec, identity,
                               {"content_type": media, "bytes": len(body)}, bulk)


def _lines(body: bytes) -> list[Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataApiError("The bulk body is not valid UTF-8", 400, "INVALID_DATA") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > data_operations.MAX_BULK:
        raise DataApiError(f"Bulk create takes at most {data_operations.MAX_BULK} lines; this "
                           f"request has {len(lines)}", 400, "INVALID_DATA")
    return [_line(line) for line in lines]


def _line(line: str) -> Any:
    """One line of a bulk body: a JSON object, or None (which that item is refused for)."""
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return item if isinstance(item, dict) else None


def _rendered(result: RunResult) -> Response:
    headers = {"X-Run-Id": result.run_id}
    if isinstance(result.error, RefusedError):
        return response(refusal(result.error, headers))
    if result.error is not None:
        return response(render_error(public_error(result.error), result.run_id))
    reply = result.reply or Reply()
    if reply.status == 204:
        return Response(status_code=204, headers=headers)
    if isinstance(reply.data, list):  # a bulk creation: one result per line
        text = b"\n".join(encode(item) for item in reply.data)
        return response(Rendered(reply.status, text, BULK_TYPE, headers))
    return response(Rendered(reply.status, encode(reply.data), "application/json", headers))


def refusal(error: RefusedError, headers: Mapping[str, str]) -> Rendered:
    """A refused write in Bubble's body for it (its `error_class` is what Bubble's clients
    test), with our stable code in `args` where Bubble puts its own."""
    body = {"error_class": "Unauthorized", "args": {"code": error.code},
            "message": error.message, "translation": error.message}
    return Rendered(error.status, encode(body), "application/json", dict(headers))


def _logged(value: Any) -> Any:
    text = value if isinstance(value, str) else short_repr(without_contents(value))
    return text if len(text) <= MAX_LOGGED else text[:MAX_LOGGED] + "…"


def _json_param(raw: Mapping[str, str], name: str, default: Any) -> Any:
    text = raw.get(name)
    if text is None:
        return default
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DataApiError(f"{name} must be JSON", 400, "INVALID_DATA") from exc


def _whole(raw: Mapping[str, str], name: str, default: int) -> int:
    text = raw.get(name)
    if text is None:
        return default
    digits = text.strip().lstrip("-")
    if len(text) > 20 or not (digits.isascii() and digits.isdigit()):  # not '²' nor '٣'
        raise DataApiError(f"{name} must be a whole number", 400, "INVALID_DATA")
    return int(text)


def _flag(raw: Mapping[str, str], name: str) -> bool:
    return raw.get(name, "false").strip().lower() in ("true", "yes", "1")


def _sort(raw: Mapping[str, str]) -> list[tuple[Any, bool]]:
    """`sort_field` and `descending`, then `additional_sort_fields` (a JSON array of
    `{sort_field, descending}`)."""
    keys: list[tuple[Any, bool]] = []
    if "sort_field" in raw:
        keys.append((raw["sort_field"], _flag(raw, "descending")))
    more = _json_param(raw, "additional_sort_fields", [])
    if not isinstance(more, list) or not all(isinstance(m, dict) for m in more):
        raise DataApiError("additional_sort_fields must be a JSON array of {sort_field, "
                           "descending}", 400, "INVALID_DATA")
    if len(more) > data_operations.MAX_SORT_FIELDS:
        raise DataApiError(f"At most {data_operations.MAX_SORT_FIELDS} sort fields", 400,
                           "INVALID_DATA")
    keys.extend((m.get("sort_field"), m.get("descending") in (True, "true")) for m in more)
    return keys
