"""Request bodies: read within a limit, then parsed as JSON, a form or multipart parts (a
file part as an `Upload` where a file parameter takes it). A body large enough to carry a
file is parsed off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from gateway.core.encoding import loads_exact
from gateway.core.errors import MalformedBodyError, PayloadTooLargeError
from gateway.core.settings import Settings
from gateway.files.uploads import Upload, safe_name
from gateway.runtime.coercion import gather

# A body larger than this (one that carries a file) is parsed off the event loop.
OFF_LOOP_BYTES = 1_048_576
MULTIPART_PIECE = 262_144  # bytes of a multipart body the parser takes at once


def _header(request: Request, name: bytes) -> str | None:
    # Straight from the ASGI scope: cheaper than building Starlette's `Headers` per request.
    for key, value in request.scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) anything over `limit` bytes, declared or streamed. A client
    that goes away mid-body raises Starlette's `ClientDisconnect`; one too slow to send it is
    answered by the server's connection (`gateway.server.protocol`, `server.body_timeout`)."""
    declared = _header(request, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"The request body is larger than {limit} bytes")
    # From the ASGI messages themselves: Starlette's `stream()` is an async generator, which
    # costs more than a small body's one message.
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"The request body is larger than {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def parse_body(request: Request, body: bytes) -> dict[str, Any]:
    parsed = parse_simple_body(request, body) if len(body) <= OFF_LOOP_BYTES else \
        await asyncio.to_thread(parse_simple_body, request, body)
    return parsed if parsed is not None else await parse_multipart(request, body)


def parse_simple_body(request: Request, body: bytes) -> dict[str, Any] | None:
    """The parameters of a JSON or urlencoded body (without awaiting anything: most bodies
    are one of those); None for a multipart body (see `parse_body`)."""
    if not body.strip():
        return {}
    content_type = (_header(request, b"content-type") or "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        return gather(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if content_type == "multipart/form-data":
        return None
    try:
        data = loads_exact(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBodyError(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedBodyError("The JSON body must be an object of parameter values")
    return data


def parse_signed_body(request: Request, body: bytes) -> dict[str, Any] | None:
    """`parse_simple_body` for a body a signature covers: a JSON object is read as JSON
    whatever the Content-Type says. The header is not signed, so a replay could otherwise
    have the same signed bytes read as a form (`&id=…` inside a JSON string becoming a
    parameter) or as multipart parts."""
    try:
        data = loads_exact(body)
    except ValueError:
        return parse_simple_body(request, body)
    return data if isinstance(data, dict) else parse_simple_body(request, body)


def upload_limit(settings: Settings) -> int:
    """The largest body of a request that may carry a file: the usual limit, and a file at
    its largest in base64 (the longer of its two forms)."""
    return settings.max_body_bytes + settings.max_file_bytes * 4 // 3 + 4


def close_uploads(raw: Mapping[str, Any]) -> None:
    """Close the files a multipart body's parts were spooled to (once the run kept them)."""
    for value in raw.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Upload) and item.file is not None:
                item.file.close()


async def parse_multipart(request: Request, body: bytes,
                           uploads: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The parts of a multipart body: a file part of a parameter named in `uploads` as an
    `Upload` (its spooled file stays open: see `close_uploads`), other parts as text."""
    async def stream() -> Any:
        # A large body (one carrying a file) in pieces: the parser lets other requests
        # run between them, and writes a large part to disk off the event loop.
        for start in range(0, len(body), MULTIPART_PIECE):
            yield body[start:start + MULTIPART_PIECE]

    boundary = _boundary(request.headers.get("content-type", ""))
    if boundary is None or b"--" + boundary + b"--" not in body:
        # A body cut off before its closing boundary would otherwise lose parts silently.
        raise MalformedBodyError("The multipart body is malformed: no closing boundary")

    try:
        form = await MultiPartParser(request.headers, stream()).parse()
    except MultiPartException as exc:
        raise MalformedBodyError(f"The multipart body is malformed: {exc.message}") from exc
    items: list[tuple[str, Any]] = []
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile) and key in uploads:
                items.append((key, Upload(safe_name(value.filename or key),
                                          value.content_type, file=value.file)))
            elif isinstance(value, UploadFile):
                # A file sent for a parameter that is not a file: read as text, not lost.
                items.append((key, (await value.read()).decode("utf-8", "replace")))
            else:
                items.append((key, value))
    finally:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile) and key not in uploads:
                await value.close()
    return gather(items)


def _boundary(content_type: str) -> bytes | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    return None
