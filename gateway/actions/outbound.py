"""Actions that call other systems: `http_request` and `send_email`, through the process's
client and mailer (`ctx.services`). A call that still fails after its retries is an
`UpstreamError`: the run answers 502 UPSTREAM_ERROR unless the step says
`on_error: continue`. What the run log keeps of a call (its method, its URL without query
string or credentials, its status, its attempts) holds no secret."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from gateway.action import Action
from gateway.context import RunContext
from gateway.errors import InvalidDataError, RunError, UpstreamError, shown
from gateway.services import MailError
from gateway.settings import parse_duration

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
MAX_ATTEMPTS = 10
MAX_RETRY_AFTER = 300.0
OFF_LOOP_BYTES = 65_536  # a server asking for a longer wait is not waited for
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


class _Retryable(Exception):
    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.message, self.wait = message, wait


def shown_url(url: httpx.URL | str) -> str:
    """A URL fit for the run log: no user, password, query string or fragment."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


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
        name, text = str(key), "" if item is None else str(item)
        if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(text):
            raise RunError(f"the header {shown(name)} is not a valid HTTP header")
        headers[name] = text
    return headers


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


def _request(args: dict[str, Any]) -> dict[str, Any]:
    method = str(args.get("method") or "GET").upper()
    if method not in METHODS:
        raise RunError(f"method {shown(method)} is not one of {', '.join(sorted(METHODS))}")
    url = str(args.get("url") or "")
    try:
        httpx.URL(url)
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port out of range raises here, not later
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidDataError(f"http_request: the url is not valid: {shown(str(exc))}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidDataError(f"http_request: the url must be an http or https URL, not "
                               f"{shown(shown_url(url))!r}")
    request: dict[str, Any] = {"method": method, "url": url,
                               "headers": _headers(args.get("headers") or {})}
    if args.get("query"):
        if not isinstance(args["query"], Mapping):
            raise RunError("query must be a mapping of names to values")
        request["params"] = {str(k): "" if v is None else v for k, v in args["query"].items()}
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
    return request


async def _attempt(ctx: RunContext, client: httpx.AsyncClient, request: dict[str, Any],
                   timeout: float, expected: frozenset[int] | None) -> dict[str, Any]:
    limit = ctx.services.max_response_bytes
    try:
        async with client.stream(**request, timeout=timeout) as response:
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():  # decoded (gzip…), then counted
                size += len(chunk)
                if size > limit:
                    raise RunError(f"the response is larger than {limit} bytes "
                                   "(http.max_response_bytes)")
                chunks.append(chunk)
            content = b"".join(chunks)
    except httpx.TimeoutException as exc:
        raise _Retryable(f"timed out after {timeout:g} s") from exc
    except httpx.TransportError as exc:
        raise _Retryable(f"could not connect: {exc}") from exc
    status = response.status_code
    if status == 429 or status >= 500:
        raise _Retryable(f"answered {status}", _retry_after(response, ctx.now))
    ok = status in expected if expected is not None else 200 <= status < 300
    if not ok:
        raise UpstreamError(f"{request['method']} {shown_url(request['url'])} answered "
                            f"{status}, not an expected status")
    return await _result(response, content)


def _decoded(content: bytes, encoding: str, is_json: bool) -> tuple[str, Any]:
    text = content.decode(encoding, "replace")
    data = None
    if is_json:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            data = None
    return text, data


async def _result(response: httpx.Response, content: bytes) -> dict[str, Any]:
    args = (content, response.encoding or "utf-8",
            "json" in response.headers.get("content-type", ""))
    # A large body is read off the event loop, so that the server keeps answering meanwhile.
    text, data = _decoded(*args) if len(content) <= OFF_LOOP_BYTES else \
        await asyncio.to_thread(_decoded, *args)
    return {"status": response.status_code, "headers": dict(response.headers.items()),
            "json": data, "text": text}


async def http_request(ctx: RunContext, args: dict[str, Any]) -> Any:
    client = ctx.services.http
    if client is None:
        raise RunError("http_request needs the process's HTTP client (started by serve and run)")
    request = _request(args)
    timeout = _seconds(args["timeout"], "timeout") if args.get("timeout") is not None else \
        ctx.services.settings.http_timeout.total_seconds()
    retry = args.get("retry") or {}
    attempts = max(1, min(int(retry.get("max_attempts", 1)), MAX_ATTEMPTS))
    backoff = _seconds(retry.get("backoff", "1s"), "retry.backoff")
    expected = _expected(args.get("expect_status"))
    ctx.remark(request=f"{request['method']} {shown_url(request['url'])}")
    for attempt in range(1, attempts + 1):
        try:
            result = await _attempt(ctx, client, request, timeout, expected)
        except _Retryable as exc:
            ctx.remark(attempts=attempt, last_error=exc.message)
            if attempt == attempts:
                raise UpstreamError(f"{request['method']} {shown_url(request['url'])} failed "
                                    f"after {attempt} attempt(s): {exc.message}") from exc
            # Exponential, with full jitter; a server's Retry-After wins.
            await asyncio.sleep(exc.wait if exc.wait is not None else
                                random.uniform(0, backoff * 2 ** (attempt - 1)))
            continue
        ctx.remark(attempts=attempt, status=result["status"])
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def _addresses(value: Any, what: str) -> list[str]:
    items = value if isinstance(value, list) else [value] if value else []
    found = []
    for item in items:
        text = str(item).strip()
        name, address = email.utils.parseaddr(text)
        if "@" not in address or any(c in text for c in "\r\n\0"):
            raise InvalidDataError(f"send_email: {what}: {shown(text)!r} is not an e-mail "
                                   "address")
        found.append(text)
    return found


def _message(args: dict[str, Any], sender: str | None) -> tuple[EmailMessage, list[str]]:
    to, cc = _addresses(args.get("to"), "to"), _addresses(args.get("cc"), "cc")
    bcc = _addresses(args.get("bcc"), "bcc")
    if not to and not cc and not bcc:
        raise RunError("send_email needs at least one recipient (to, cc or bcc)")
    sender = str(args.get("from") or sender or "")
    if not sender:
        raise RunError("send_email needs a sender: from, or smtp.from in the settings")
    text, html = args.get("text"), args.get("html")
    if text is None and html is None:
        raise RunError("send_email needs text or html")
    message = EmailMessage()
    try:
        message["From"] = _addresses(sender, "from")[0]
        if to:
            message["To"] = ", ".join(to)
        if cc:
            message["Cc"] = ", ".join(cc)
        if args.get("reply_to"):
            message["Reply-To"] = ", ".join(_addresses(args["reply_to"], "reply_to"))
        message["Subject"] = str(args.get("subject") or "")
        message["Date"] = email.utils.format_datetime(datetime.now(UTC))
        message["Message-ID"] = email.utils.make_msgid()
    except ValueError as exc:  # a line break in a header: refused, never sent
        raise InvalidDataError(f"send_email: {shown(str(exc))}") from exc
    if text is not None:
        message.set_content(str(text))
        if html is not None:
            message.add_alternative(str(html), subtype="html")
    else:
        message.set_content(str(html), subtype="html")
    return message, [*to, *cc, *bcc]


async def send_email(ctx: RunContext, args: dict[str, Any]) -> Any:
    mailer = ctx.services.mailer
    if mailer is None:
        raise RunError("send_email needs an SMTP server: smtp.host in the settings")
    message, recipients = _message(args, mailer.sender)
    plain = [email.utils.parseaddr(r)[1] for r in recipients]
    try:
        await mailer.send(message, plain)
    except MailError as exc:
        raise UpstreamError(f"send_email: {exc}") from exc
    ctx.remark(recipients=len(plain))
    return {"message_id": message["Message-ID"], "recipients": len(plain)}


ACTIONS = (
    Action("http_request", http_request),
    Action("send_email", send_email),
)
