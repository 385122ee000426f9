"""Webhook signatures: each provider's scheme, checked over the raw body in constant time.

`verify(spec, secret, headers, body, now)` raises `InvalidSignatureError` unless the request
carries a valid signature made with `secret`; `headers` maps lower-case names to values.
The schemes follow the providers' own libraries and documentation:

- `stripe`: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, an HMAC-SHA256 of
  `<t>.<body>`; any `v1` may match; `t` within `tolerance` seconds of now.
- `github`: `X-Hub-Signature-256: sha256=<hex>`, an HMAC-SHA256 of the body.
- `slack`: `X-Slack-Signature: v0=<hex>`, an HMAC-SHA256 of `v0:<timestamp>:<body>`, with
  `X-Slack-Request-Timestamp` within `tolerance`.
- `standard-webhooks`: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>
  [ v1,<base64>…]`, an HMAC-SHA256 of `<id>.<timestamp>.<body>` keyed by the base64 after
  `whsec_`.
- `hmac`: any other sender: a `header`, an `algorithm`, a `prefix` before the digest, `hex`
  or `base64`; with a `timestamp_header`, the signed text is `<timestamp>.<body>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any

from gateway.core.errors import GatewayError, InvalidSignatureError
from gateway.runtime.model import Registry, VerifySpec

log = logging.getLogger("gateway.hooks")
ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
# More signatures than this in one header are not tried: each costs an HMAC comparison.
MAX_SIGNATURES = 8


def _refuse(reason: str) -> InvalidSignatureError:
    return InvalidSignatureError(f"The webhook signature is not valid: {reason}")


# The HMAC of each secret (and algorithm) in use, keyed once: each request copies it and
# hashes only its message, rather than mixing the key in again on every call. Kept is the
# OpenSSL object inside the standard library's `hmac.HMAC` where there is one (its `copy`,
# `update` and `digest` are the same, without the Python wrapper's calls around them).
_KEYED: dict[tuple[bytes, str], Any] = {}
_MOST_KEYED = 64  # secrets change only with a reload; past this many, start afresh


def _mac(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    """`hmac.digest(key, message, algorithm)`, from the keyed HMAC kept for the next call."""
    keyed = _KEYED.get((key, algorithm))
    if keyed is None:
        if len(_KEYED) >= _MOST_KEYED:
            _KEYED.clear()
        made = hmac.new(key, digestmod=ALGORITHMS[algorithm])
        keyed = _KEYED[(key, algorithm)] = getattr(made, "_hmac", None) or made
    mac = keyed.copy()
    mac.update(message)
    return bytes(mac.digest())


def _any_equal(expected: str, candidates: list[str]) -> bool:
    """Constant time per candidate; every candidate is compared (no early exit)."""
    found = False
    wanted = expected.encode()
    for candidate in candidates[:MAX_SIGNATURES]:
        found |= hmac.compare_digest(wanted, candidate.encode("utf-8", "replace"))
    return found


def _timestamp(text: str | None, now: float, tolerance: int) -> str:
    if text is None or not text.strip():
        raise _refuse("no timestamp")
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 12:  # not '²' nor '٣'
        raise _refuse("the timestamp is not a number of seconds")
    if abs(now - int(text)) > tolerance:
        raise _refuse(f"the timestamp is more than {tolerance} s away from now")
    return text


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise _refuse(f"no {name} header")
    return value


def _stripe(secret: str, headers: Mapping[str, str], body: bytes, now: float,
            spec: VerifySpec) -> None:
    timestamp, signatures = None, []
    for item in _header(headers, "stripe-signature").split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            signatures.append(value)
    if not signatures:
        raise _refuse("no v1 signature in Stripe-Signature")
    stamp = _timestamp(timestamp, now, spec.tolerance)
    expected = _mac(secret.encode(), stamp.encode() + b"." + body).hex()
    if not _any_equal(expected, signatures):
        raise _refuse("no signature matches")


def _github(secret: str, headers: Mapping[str, str], body: bytes, now: float,
            spec: VerifySpec) -> None:
    given = _header(headers, "x-hub-signature-256").strip()
    expected = "sha256=" + _mac(secret.encode(), body).hex()
    if not _any_equal(expected, [given]):
        raise _refuse("the signature does not match")


def _slack(secret: str, headers: Mapping[str, str], body: bytes, now: float,
           spec: VerifySpec) -> None:
    given = _header(headers, "x-slack-signature").strip()
    stamp = _timestamp(headers.get("x-slack-request-timestamp"), now, spec.tolerance)
    expected = "v0=" + _mac(secret.encode(), b"v0:" + stamp.encode() + b":" + body).hex()
    if not _any_equal(expected, [given]):
        raise _refuse("the signature does not match")


def _standard_key(secret: str) -> bytes:
    """The key of a standard-webhooks secret: the base64 after `whsec_`, read as the
    provider's library reads it (the prefix may be left out; a trailing line break is
    ignored); `ValueError` for anything else."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_").strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64") from exc
    if not key:
        raise ValueError("an empty key")
    return key


def secret_problem(scheme: str, secret: str) -> str | None:
    """Why `secret` cannot check signatures of `scheme`, or None; said without the secret."""
    if scheme == "standard-webhooks":
        try:
            _standard_key(secret)
        except ValueError:
            return ("a standard-webhooks secret is whsec_ followed by a key in base64, as "
                    "the sender shows it")
    return None


def _standard(secret: str, headers: Mapping[str, str], body: bytes, now: float,
              spec: VerifySpec) -> None:
    try:
        key = _standard_key(secret)
    except ValueError:
        # the operator's mistake: said in the server log, not to whoever sent the request
        log.error("verify: the standard-webhooks secret is not a whsec_ base64 key")
        raise _refuse("the gateway could not check it") from None
    message_id = _header(headers, "webhook-id").strip()
    stamp = _timestamp(headers.get("webhook-timestamp"), now, spec.tolerance)
    signed = message_id.encode() + b"." + stamp.encode() + b"." + body
    expected = base64.b64encode(_mac(key, signed)).decode()
    given = [part.partition(",")[2] for part in _header(headers, "webhook-signature").split()
             if part.startswith("v1,")]
    if not given:
        raise _refuse("no v1 signature in webhook-signature")
    if not _any_equal(expected, given):
        raise _refuse("no signature matches")


def _generic(secret: str, headers: Mapping[str, str], body: bytes, now: float,
             spec: VerifySpec) -> None:
    given = _header(headers, spec.header).strip()
    signed = body
    if spec.timestamp_header:
        stamp = _timestamp(headers.get(spec.timestamp_header), now, spec.tolerance)
        signed = stamp.encode() + b"." + body
    digest = _mac(secret.encode(), signed, spec.algorithm)
    encoded = digest.hex() if spec.encoding == "hex" else base64.b64encode(digest).decode()
    if spec.encoding == "hex":
        given = given.lower() if not spec.prefix else spec.prefix + \
            given.removeprefix(spec.prefix).lower()
    if not _any_equal(spec.prefix + encoded, [given]):
        raise _refuse("the signature does not match")


_SCHEMES = {"stripe": _stripe, "github": _github, "slack": _slack,
            "standard-webhooks": _standard, "hmac": _generic}


def header_names(spec: VerifySpec) -> frozenset[str]:
    """The lower-case names of the headers `verify` reads for `spec`."""
    if spec.scheme == "hmac":
        return frozenset(name for name in (spec.header, spec.timestamp_header) if name)
    return _HEADERS[spec.scheme]


_HEADERS = {"stripe": frozenset({"stripe-signature"}),
            "github": frozenset({"x-hub-signature-256"}),
            "slack": frozenset({"x-slack-signature", "x-slack-request-timestamp"}),
            "standard-webhooks": frozenset({"webhook-id", "webhook-timestamp",
                                            "webhook-signature"})}


def verify(spec: VerifySpec, secret: str, headers: Mapping[str, str], body: bytes,
           now: float) -> None:
    """Raise `InvalidSignatureError` unless the request is signed with `secret`."""
    if not secret:
        raise InvalidSignatureError("The webhook secret is empty")
    _SCHEMES[spec.scheme](secret, headers, body, now, spec)


def secret_problems(registry: Registry, secrets: Mapping[str, str]) -> list[str]:
    """Each workflow whose `verify` secret, read from `secrets`, cannot check its
    scheme's signatures, and why (the secret is not shown): serve and a reload refuse
    such a config, as they refuse a missing secret."""
    found = []
    for workflow in sorted(registry.workflows.values(), key=lambda w: w.name):
        hooks = workflow.hooks
        if hooks is None or hooks.verify is None or hooks.secret is None:
            continue
        try:
            value = hooks.secret({"secrets": secrets})
        except GatewayError:
            continue  # a secret the environment does not set: refused as missing
        problem = secret_problem(hooks.verify.scheme, "" if value is None else str(value))
        if problem is not None:
            found.append(f"workflow {workflow.name}: {problem}")
    return found
