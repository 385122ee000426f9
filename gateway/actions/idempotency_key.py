"""`http_request`'s `idempotency_key`: the header that lets an upstream do a call once
however often it is asked (a job's attempts, a step's own retries). Stripe and many
payment APIs read `Idempotency-Key`; a step may send the key under another name.

The key is rendered on every attempt: with stable values (`run.job`, a record's id) it is
the same on each, which is what closes the window resumable runs leave open (a call that
went through just before the process died, before its checkpoint was written)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.core import pointer as ptr
from gateway.core.errors import InvalidDataError, RunError, shown
from gateway.runtime.action_spec import StepCheck

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 255  # characters: Stripe's limit, and more than any key needs
_KEY = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")  # visible ASCII, inner blanks
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header name (RFC 9110)


def idempotency_header(value: Any) -> tuple[str, str]:
    """The header and the key an `idempotency_key` sends: the rendered key must be a
    header value an upstream can compare (visible ASCII, no line break that would start
    another header, not empty, at most `MAX_IDEMPOTENCY_KEY` characters). The key is not
    quoted in the error: it may hold a caller's value."""
    name, key = IDEMPOTENCY_HEADER, value
    if isinstance(value, Mapping):
        name, key = str(value.get("header") or IDEMPOTENCY_HEADER), value.get("key")
        if not _TOKEN.fullmatch(name):
            raise RunError(f"http_request: idempotency_key.header {shown(name)!r} is not a "
                           "header name")
    text = "" if key is None else str(key)
    if not text.strip():
        raise InvalidDataError("http_request: idempotency_key rendered empty; it needs a "
                               "value that is the same on every attempt (run.job, say)")
    if len(text) > MAX_IDEMPOTENCY_KEY:
        raise InvalidDataError(f"http_request: idempotency_key is {len(text)} characters "
                               f"long; at most {MAX_IDEMPOTENCY_KEY} are sent")
    if not _KEY.fullmatch(text):
        raise InvalidDataError("http_request: idempotency_key must be printable ASCII with "
                               "no line breaks, control characters or blanks at its ends")
    return name, text


def check_http(check: StepCheck, args: Mapping[str, Any]) -> None:
    """An `idempotency_key` and a `headers` entry of the same name: which one to send is
    not guessed, it is an error (a `headers` template is checked when it runs)."""
    given, headers = args.get("idempotency_key"), args.get("headers")
    if given is None or not isinstance(headers, Mapping):
        return
    name = IDEMPOTENCY_HEADER
    if isinstance(given, Mapping) and isinstance(given.get("header"), str):
        name = given["header"]
    for key in headers:
        if str(key).lower() == name.lower():
            check.error(ptr.join(check.base, "headers", str(key)), "step.idempotency-header",
                        f"the header {key} is also sent by idempotency_key: give it in one "
                        "place", key=True)
