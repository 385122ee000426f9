"""The `http_request` action: a call to another system through the process's HTTP client
(`ctx.services`), with retries, timeouts, bounded and decoded answers. A call that still
fails after its retries is an `UpstreamError`: the run answers 502 UPSTREAM_ERROR unless the
step says `on_error: continue`. What the run log keeps of a call (its method, its URL
without query string or credentials, its status, its attempts) holds no secret."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import re
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from gateway.actions.idempotency_key import check_http, idempotency_header
from gateway.core.encoding import loads_exact
from gateway.core.errors import GatewayError, InvalidDataError, RunError, UpstreamError, shown
from gateway.core.redaction import REDACTED
from gateway.core.settings import parse_duration
from gateway.runtime.action_spec import Action
from gateway.runtime.context import RunContext

if TYPE_CHECKING:  # imported where a call is made: see gateway.runtime.http_client
    import httpx

    from gateway.tracing.otel import Tracing

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
MAX_ATTEMPTS = 10  # attempts an http_request step makes at most, whatever its retry says
MAX_RETRY_AFTER = 300.0  # seconds: the longest `Retry-After` waited for
OFF_LOOP_BYTES = 65_536  # a server asking for a longer wait is not waited for
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


class _Retryable(Exception):
    def __init__(self, message: str, wait: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.message, self.wait, self.status = message, wait, status


def shown_url(url: httpx.URL | str, hidden: frozenset[str] = frozenset()) -> str:
    """A URL fit for the run log: no user, password, query string or fragment; and nothing
    but its scheme when a secret (`hidden`, in its forms) is in what would be shown: the
    URL is cut and its host lower-cased here, which would leave a part of the secret that
    the run log's redaction, looking for the whole, cannot find."""
    text = str(url)
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    shown = urlunsplit((parts.scheme, host + (f":{port}" if port else ""), parts.path, "", ""))
    dropped = f"{parts.username or ''}:{parts.password or ''}?{parts.query}#{parts.fragment}"
    for secret in hidden:
        if secret in text and secret not in dropped or secret.lower() in shown.lower():
            return f"{parts.scheme}://{REDACTED}"
    return shown


def _seconds(value: Any, what: str) -> float:
    try:
        seconds = parse_duration(value).total_seconds()
    except (ValueError, TypeError) as exc:
        raise RunError(f"{what} is not a duration: {shown(str(value))}") from exc
    if seconds <= 0:
        raise RunError(f"{what} must be more than 0 s")
    return seconds


def _headers(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise RunError("headers must be a mapping of names to values")
    headers = {}
    for key, item in value.items():
        # a value's leading and trailing blanks are not part of it (RFC 9110), and HTTP
        # libraries refuse them, quoting the value (a secret) in their error
        name, text = str(key), "" if item is None else str(item).strip(" \t")
        if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(text):
            raise RunError(f"the header {shown(name)} is not a valid HTTP header")
        headers[name] = text
    return headers


def _encoded(headers: dict[str, str]) -> dict[str, bytes]:
    """Header values as the bytes sent: Latin-1 (`_VALUE` admits it; httpx would encode
    text as ASCII and fail on `José`)."""
    return {name: text.encode("latin-1") for name, text in headers.items()}


def _expected(value: Any) -> frozenset[int] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    try:
        return frozenset(int(item) for item in items)
    except (TypeError, ValueError) as exc:
        raise RunError(f"expect_status must be status codes, not {shown(str(value))}") from exc


def _retry_after(response: httpx.Response, now: datetime) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    seconds = value.strip()
    if seconds.isascii() and seconds.isdigit():  # not '²', which float() refuses
        return min(float(seconds), MAX_RETRY_AFTER)
    try:
        with_date = email.utils.parsedate_to_datetime(value) if value else None
    except ValueError:  # neither seconds nor a date: retried after the step's own backoff
        return None
    if with_date is None or with_date.tzinfo is None:
        return None
    return min(max((with_date - now).total_seconds(), 0.0), MAX_RETRY_AFTER)


def _request(args: dict[str, Any], hidden: frozenset[str]) -> dict[str, Any]:
    import httpx  # loaded by the first call out (see gateway.runtime.http_client)

    method = str(args.get("method") or "GET").upper()
    if method not in METHODS:
        raise RunError(f"method {shown(method)} is not one of {', '.join(sorted(METHODS))}")
    url = str(args.get("url") or "")
    try:
        httpx.URL(url)
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port out of range raises here, not later
    except (httpx.InvalidURL, ValueError) as exc:
        # the parser's reason quotes a part of the URL (`Invalid port: '…'`)
        why = "" if any(secret in url for secret in hidden) else f": {shown(str(exc))}"
        raise InvalidDataError(f"http_request: the url is not valid{why}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidDataError(f"http_request: the url must be an http or https URL, not "
                               f"{shown(shown_url(url, hidden))!r}")
    request: dict[str, Any] = {"method": method, "url": url,
                               "headers": _headers(args.get("headers") or {})}
    if args.get("query"):
        if not isinstance(args["query"], Mapping):
            raise RunError("query must be a mapping of names to values")
        request["params"] = {str(k): "" if v is None else v for k, v in args["query"].items()}
    if args.get("idempotency_key") is not None:
        name, key = idempotency_header(args["idempotency_key"])
        if any(given.lower() == name.lower() for given in request["headers"]):
            raise RunError(f"http_request: the header {name} is given by both headers and "
                           "idempotency_key")
        request["headers"][name] = key
    bodies = [key for key in ("json", "form", "body") if args.get(key) is not None]
    if len(bodies) > 1:
        raise RunError(f"give one of json, form and body, not {' and '.join(bodies)}")
    if "json" in bodies:
        request["content"] = json.dumps(args["json"], default=str).encode()
        request["headers"].setdefault("Content-Type", "application/json")
    elif "form" in bodies:
        request["data"] = {str(k): str(v) for k, v in dict(args["form"]).items()}
    elif "body" in bodies:
        request["content"] = str(args["body"]).encode()
    headers = _encoded(request["headers"])
    # what this step can bound (`max_response_bytes`, while decompressing): not br or zstd
    if not any(name.lower() == "accept-encoding" for name in headers):
        headers["Accept-Encoding"] = _ACCEPTED
    request["headers"] = headers
    return request


def _too_large(limit: int) -> RunError:
    return RunError(f"the response is larger than {limit} bytes (http.max_response_bytes)")


async def _attempt(ctx: RunContext, client: httpx.AsyncClient, request: dict[str, Any],
                   timeout: float, expected: frozenset[int] | None) -> dict[str, Any]:
    """One call, `timeout` for the whole of it (httpx's own bounds each read, so a server
    sending a byte a second would never time out); the body as it came, counted against
    `max_response_bytes` before it is decompressed (see `_decoded`)."""
    import httpx  # loaded by the first call out (see gateway.runtime.http_client)

    limit = ctx.services.max_response_bytes
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(**request, timeout=timeout) as response:
                chunks, size = [], 0
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
                    chunks.append(chunk)
                content = b"".join(chunks)
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise _Retryable(f"timed out after {timeout:g} s") from exc
    except httpx.LocalProtocolError as exc:  # its reason quotes what was refused (a header)
        raise _Retryable(f"the request could not be sent: {type(exc).__name__}") from exc
    except httpx.TransportError as exc:
        raise _Retryable(f"could not connect: {exc}") from exc
    status = response.status_code
    if status == 429 or status >= 500:
        raise _Retryable(f"answered {status}", _retry_after(response, datetime.now(UTC)),
                         status)
    ok = status in expected if expected is not None else 200 <= status < 300
    if not ok:
        raise UpstreamError(f"{request['method']} {shown_url(request['url'], ctx.hidden)} "
                            f"answered {status}, not an expected status")
    asked = request["headers"].get("Accept-Encoding") == _ACCEPTED
    return await _result(response, content, limit, asked)


# The content codings a response may come in (`Accept-Encoding` asks for these only, unless
# the step sets it), as zlib's window bits.
_ACCEPTED = b"gzip, deflate"
_CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
            "deflate": zlib.MAX_WBITS}


def _decompressed(content: bytes, codings: list[str], limit: int, asked: bool) -> bytes:
    """The body with its content codings undone, last applied first, each one bounded by
    `limit` bytes of output: a small answer that inflates to gigabytes stops at the limit.
    A coding it cannot undo is refused when the gateway chose `Accept-Encoding` (`asked`:
    only these), else the body is kept as it came (the workflow asked for that coding)."""
    for coding in reversed(codings):
        if coding == "identity":
            continue
        bits = _CODINGS.get(coding)
        if bits is None:
            if not asked:
                return content
            raise UpstreamError(f"the response came in a content coding it was not asked for: "
                                f"{shown(coding)}")
        try:
            content = _inflated(content, bits, limit)
        except zlib.error:
            if coding != "deflate":
                raise UpstreamError(f"the response is not valid {coding}") from None
            try:  # "deflate" sent without its zlib wrapper, as some servers do
                content = _inflated(content, -zlib.MAX_WBITS, limit)
            except zlib.error:
                raise UpstreamError("the response is not valid deflate") from None
    return content


def _inflated(content: bytes, bits: int, limit: int) -> bytes:
    """One coding undone: every gzip member in turn (RFC 1952 allows several), at most
    `limit` bytes in all; a stream that ends early is no valid one."""
    out = bytearray()
    while True:
        decoder = zlib.decompressobj(bits)
        out += decoder.decompress(content, limit + 1 - len(out))
        if len(out) > limit or decoder.unconsumed_tail:
            raise _too_large(limit)
        if not decoder.eof:
            raise zlib.error("the stream ends early")
        content = decoder.unused_data
        if not content.strip(b"\0") or bits != _CODINGS["gzip"]:
            return bytes(out)


def _decoded(content: bytes, codings: list[str], limit: int, asked: bool, encoding: str,
             is_json: bool) -> tuple[str, Any]:
    content = _decompressed(content, codings, limit, asked)
    try:
        text = content.decode(encoding, "replace")
    except (LookupError, UnicodeError, TypeError, ValueError):  # `hex`, `zlib`, `idna`…
        text = content.decode("utf-8", "replace")
    data = None
    if is_json:
        try:  # orjson: a lone surrogate (`"\\ud800"`) is not JSON, nor could be answered
            data = loads_exact(text.encode("utf-8", "replace"))
        except ValueError:
            data = None
    return text, data


async def _result(response: httpx.Response, content: bytes, limit: int,
                  asked: bool) -> dict[str, Any]:
    codings = [part.strip().lower()
               for part in response.headers.get("content-encoding", "").split(",")
               if part.strip()]
    args = (content, codings, limit, asked, response.charset_encoding or "utf-8",
            "json" in response.headers.get("content-type", ""))
    # A large or compressed body is read off the event loop, so that the server keeps
    # answering meanwhile.
    text, data = _decoded(*args) if len(content) <= OFF_LOOP_BYTES and not codings else \
        await asyncio.to_thread(_decoded, *args)
    return {"status": response.status_code, "headers": dict(response.headers.items()),
            "json": data, "text": text}


async def http_request(ctx: RunContext, args: dict[str, Any]) -> Any:
    client = ctx.services.http
    if client is None:
        raise RunError("http_request needs the process's HTTP client, which this process "
                       "did not start (serve, worker and run start it)")
    request = _request(args, ctx.hidden)
    timeout = _seconds(args["timeout"], "timeout") if args.get("timeout") is not None else \
        ctx.services.settings.http_timeout.total_seconds()
    retry = args.get("retry") or {}
    attempts = max(1, min(int(retry.get("max_attempts", 1)), MAX_ATTEMPTS))
    backoff = _seconds(retry.get("backoff", "1s"), "retry.backoff")
    expected = _expected(args.get("expect_status"))
    url = shown_url(request["url"], ctx.hidden)
    ctx.remark(request=f"{request['method']} {url}")
    tracing = ctx.services.tracing
    for attempt in range(1, attempts + 1):
        try:
            result = await (_attempt(ctx, client, request, timeout, expected) if tracing is None
                            else _traced(tracing, ctx, client, request, timeout, expected,
                                         attempt, url))
        except _Retryable as exc:
            ctx.remark(attempts=attempt, last_error=exc.message)
            if attempt == attempts:
                raise UpstreamError(f"{request['method']} {url} failed after {attempt} "
                                    f"attempt(s): {exc.message}") from None
            # Exponential, with full jitter; a server's Retry-After wins.
            await asyncio.sleep(exc.wait if exc.wait is not None else
                                random.uniform(0, backoff * 2 ** (attempt - 1)))
            continue
        ctx.remark(attempts=attempt, http_status=result["status"])
        return result
    raise AssertionError("unreachable")  # pragma: no cover


async def _traced(tracing: Tracing, ctx: RunContext, client: httpx.AsyncClient,
                  request: dict[str, Any], timeout: float, expected: frozenset[int] | None,
                  attempt: int, url: str) -> dict[str, Any]:
    """One attempt as a client span (HTTP semantic conventions: the URL as the run log shows
    it), its `traceparent` sent to the upstream unless the step sets one itself."""
    parts = urlsplit(request["url"])
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    hidden = ctx.hidden | ctx.passwords if ctx.passwords else ctx.hidden
    # the URL's origin: its path and query may carry a caller's values
    origin = shown_url(urlunsplit((parts.scheme, parts.netloc, "/", "", "")), hidden)
    opened = tracing.client(request["method"], {
        "http.request.method": request["method"], "server.address": parts.hostname,
        "server.port": port, "url.full": origin,
        "http.request.resend_count": attempt - 1 if attempt > 1 else None}, hidden)
    headers = request["headers"]
    if not any(name.lower() in ("traceparent", "tracestate") for name in headers):
        headers = {**headers, **{name: value.encode("latin-1")
                                 for name, value in tracing.headers(opened).items()}}
    status: int | None = None
    kind: str | None = None  # the error's type, its status description too (never a message)
    try:
        result = await _attempt(ctx, client, {**request, "headers": headers}, timeout, expected)
        status = result["status"]
        return result
    except _Retryable as exc:
        status = exc.status
        kind = str(exc.status) if exc.status is not None else type(exc.__cause__).__name__ \
            if exc.__cause__ is not None else "_OTHER"
        raise
    except BaseException as exc:
        kind = exc.code if isinstance(exc, GatewayError) else type(exc).__name__
        raise
    finally:
        opened.close({"http.response.status_code": status, "error.type": kind}, error=kind)


ACTIONS = (Action("http_request", http_request, check=check_http, outbound=True),)
