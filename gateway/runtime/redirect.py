"""Redirect responses, as Bubble's "redirect" response type answers: a 302 to a page, with
the returned data (or, on error, `statusCode` and `message`) as query parameters.

Only to targets the settings allow (`redirects.allowed`): a target is allowed when its
scheme, host and port equal a listed prefix's and its path is the prefix's path or under it
(a segment boundary: `/app` allows `/app` and `/app/x`, not `/apps`). Before that, a target
must be an absolute `http(s)` URL of printable ASCII without user information, backslash or
`.`/`..` path segments: what browsers read otherwise than a parser here (`//evil.com`,
`https://app.example.com@evil.com`, `https:\\\\evil.com`, `javascript:`) is refused, and no
CR or LF can reach the `Location` header (query values are percent-encoded).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import SplitResult, quote, urlencode, urlsplit, urlunsplit

from gateway.core.encoding import encode, iso
from gateway.core.errors import (
    GatewayError,
    RedirectRefusedError,
    RedirectTooLongError,
    public_error,
    shown,
)
from gateway.core.settings import Settings
from gateway.runtime.context import Reply
from gateway.templates.templating import Compiled

_PRINTABLE = re.compile(r"[\x21-\x7e]+")
_DOT_SEGMENT = re.compile(r"(?:^|/)(?:\.|%2e){1,2}(?:/|$)", re.I)
# In a path, what a server behind the allowed host may decode into another path: an encoded
# slash, backslash or percent sign (`%2f..%2f`, `%252e%252e`), and `;` (`/app/..;/x`).
_PATH_TRICK = re.compile(r"%2f|%5c|%25|;", re.I)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def refusal(url: Any, allowed: Iterable[str]) -> str | None:
    """Why `url` may not be redirected to under the `allowed` prefixes; None when it may."""
    if not isinstance(url, str) or not url:
        return "a redirect target is a non-empty URL"
    if not _PRINTABLE.fullmatch(url) or "\\" in url:
        return (f"the redirect target {shown(url)!r} holds a space, a control character, a "
                "backslash or a character beyond ASCII")
    target = _origin_and_path(url)
    if target is None:
        return (f"the redirect target {shown(url)!r} is not an absolute http(s) URL with a "
                "host and no user information")
    path = urlsplit(url).path
    if _DOT_SEGMENT.search(path):
        return f"the redirect target {shown(url)!r} has '.' or '..' path segments"
    if _PATH_TRICK.search(path):
        return (f"the redirect target {shown(url)!r} has an encoded '/', '\\' or '%', or a "
                "';', in its path")
    for prefix in allowed:
        listed = _origin_and_path(prefix)
        if listed is not None and listed[0] == target[0] and _under(target[1], listed[1]):
            return None
    return (f"the redirect target {shown(url)!r} is not under any URL of the settings' "
            "redirects.allowed")


def _origin_and_path(url: str) -> tuple[tuple[str, str, int], str] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    return (scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]), parts.path or "/"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix if prefix.endswith("/") else prefix + "/")


def query_pairs(data: Any) -> list[tuple[str, str]]:
    """Returned data as query parameters: each key with its value as text (a date in the
    gateway's ISO form, a yes/no as `true`/`false`), a list as its items joined by commas
    (what a Bubble page reads as a list from its URL), a mapping's keys as `key.sub`, and
    null values left out."""
    if not isinstance(data, Mapping):
        return [] if data is None else [("data", _text(data))]
    pairs: list[tuple[str, str]] = []
    _flatten(data, "", pairs)
    return pairs


def _flatten(data: Mapping[Any, Any], prefix: str, pairs: list[tuple[str, str]]) -> None:
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            _flatten(value, name, pairs)
        elif isinstance(value, (list, tuple)):
            pairs.append((name, ",".join(_text(item) for item in value if item is not None)))
        else:
            pairs.append((name, _text(value)))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, (int, float)):
        return str(value)
    return encode(value).decode()


def redirect_reply(url: Any, pairs: list[tuple[str, str]], allowed: Iterable[str],
                   max_length: int) -> Reply:
    """A 302 to `url` with `pairs` added to its query, or the error that refuses it."""
    reason = refusal(url, allowed)
    if reason is not None:
        raise RedirectRefusedError(reason)
    assert isinstance(url, str)
    parts: SplitResult = urlsplit(url)
    extra = urlencode(pairs, quote_via=quote, safe="")
    query = "&".join(q for q in (parts.query, extra) if q)
    location = urlunsplit(parts._replace(query=query))
    if len(location) > max_length:
        raise RedirectTooLongError(
            f"the redirect URL would be {len(location)} characters long, more than "
            f"{max_length} (redirects.max_url_length): return less data")
    return Reply(text="", content_type=None, status=302,
                 headers={"Location": location, "Cache-Control": "no-store"})


def error_target(target: Compiled, error: GatewayError, request: Mapping[str, Any] | None,
                 settings: Settings) -> tuple[GatewayError, Reply | None]:
    """A failed run of a workflow with an `error_redirect`: the redirect that carries its
    `statusCode` and `message` (as the caller would read them in the JSON error), or, when
    the target cannot be had or is not allowed, the error that says so, and no redirect."""
    try:
        url = target({"request": request or {}})
        shown_error = public_error(error)
        return error, redirect_reply(url, [("statusCode", str(shown_error.status)),
                                           ("message", shown_error.message)],
                                     settings.redirect_allowed, settings.redirect_max_url)
    except RedirectRefusedError as exc:
        return exc, None
    except GatewayError as exc:
        return RedirectRefusedError(f"the error_redirect target could not be read: "
                                    f"{exc.message}"), None
