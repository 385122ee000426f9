"""Files and images as the gateway serves them: `/files/<id>/<name>` and, for a private
file, `/files/private/<id>/<name>?expires=…&signature=…` (see `gateway.files.service`).

A file answers only while a record holds it (`gateway.runtime.file_values.is_held`); a private
one only with a valid, unexpired signature. Everything else gets the same 404, so a
missing, dropped or misnamed file cannot be told apart. An image is served as the image
its bytes are; any other file as an attachment, never rendered as a page of this origin.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway.api.workflow_endpoints import Endpoint, error_response
from gateway.core.errors import ForbiddenError, NotFoundError
from gateway.files.store import StoredFile
from gateway.runtime.file_values import is_held
from gateway.runtime.interpreter import Interpreter

_SAFE = {"X-Content-Type-Options": "nosniff",
         "Content-Security-Policy": "default-src 'none'; sandbox"}


def routes(interpreter: Interpreter) -> list[BaseRoute]:
    if interpreter.storage is None:
        return []
    serve = _serve(interpreter)
    return [Route("/files/{id}/{name}", serve, methods=["GET", "HEAD"]),
            Route("/files/private/{id}/{name}", serve, methods=["GET", "HEAD"])]


def _serve(interpreter: Interpreter) -> Endpoint:
    async def serve(request: Request) -> Response:
        files, storage = interpreter.services.files, interpreter.storage
        missing = NotFoundError("No file is kept at this address")
        if files is None or storage is None:
            return error_response(missing)
        private = request.url.path.rsplit("/", 3)[-3] == "private"
        file = await files.store.describe(request.path_params["id"])
        if file is None or file.private != private or file.name != request.path_params["name"]:
            return error_response(missing)
        path = file.path(files.prefix)
        if private and not files.signed_ok(path, request.query_params.get("expires"),
                                           request.query_params.get("signature")):
            return error_response(ForbiddenError(
                "This link to a private file is not signed, or has expired: ask for the "
                "record again for a new one"))
        if not await is_held(storage, interpreter.data_types, files, file):
            return error_response(missing)
        headers = {**_SAFE, "Content-Length": str(file.size),
                   "Cache-Control": "private, no-store" if private else "no-cache",
                   "Content-Disposition": _disposition(file)}
        # The bytes opened before the answer starts: ones gone (a delete racing this, a
        # store restored without them) are the same 404, not a 200 cut off mid-stream.
        chunks = files.store.read(file.id)
        try:
            first = await anext(chunks, b"")
        except FileNotFoundError:
            return error_response(missing)
        if request.method == "HEAD":
            await chunks.aclose()
            return Response(status_code=200, headers=headers, media_type=file.content_type)
        return StreamingResponse(_rest(first, chunks), headers=headers,
                                 media_type=file.content_type)

    return serve


async def _rest(first: bytes, chunks: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in chunks:
            yield chunk
    finally:
        await chunks.aclose()


def _disposition(file: StoredFile) -> str:
    kind = "inline" if file.image else "attachment"
    return f"{kind}; filename*=UTF-8''{quote(file.name, safe='')}"
