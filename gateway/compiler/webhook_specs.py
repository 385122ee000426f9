"""An API workflow's `verify`, `idempotency` and `rate_limit`, built into `Hooks`: the
secret's template may read `secrets` only, the idempotency key's `params` and `request`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from jinja2 import TemplateSyntaxError

from gateway.compiler.units import Unit
from gateway.core.errors import TemplateError
from gateway.core.settings import Settings, parse_duration
from gateway.runtime.model import DEFAULT_TOLERANCE, Hooks, VerifySpec
from gateway.templates import budget, templating
from gateway.templates.templating import Compiled
from gateway.webhooks.signature import secret_problem


class HookSite(Protocol):
    """What building hooks needs of the place they are in (a `steps.Site`)."""

    unit: Unit

    @property
    def settings(self) -> Settings | None: ...

    def error(self, pointer: str, code: str, message: str, *, key: bool = False) -> None: ...

    def leaf_with(self, names: frozenset[str], pointer: str, text: str) -> Compiled: ...


SECRET_NAMES = frozenset({"secrets"})
KEY_NAMES = frozenset({"params", "request"})


def key_header(text: Any) -> str:
    """The header's name (lower-case) when a key template is exactly a header of the
    request (`{{ request.headers['x-delivery'] }}`), else "". Not `authorization`: a bearer
    credential is kept out of what templates see."""
    path = templating.lookup_path(text) if isinstance(text, str) else None
    if path is None or len(path) != 3 or path[:2] != ("request", "headers"):
        return ""
    name = path[2].lower()
    if name == "authorization" or name != path[2] or not name.isascii():
        return ""  # not a header a request can carry as written: the template decides
    return name


def _constant_secret(text: str, limits: budget.Limits) -> str | None:
    """The secret a template that reads no names gives (`{{ 'whsec_…' }}`, `whsec_{{ '…' }}`),
    as a request reads it, evaluated now within `limits`; None for a template that reads a
    name or does not parse (`leaf` says why). Raises `TemplateError`."""
    try:
        source = templating.parse(text)
    except TemplateSyntaxError:
        return None
    if templating.references(source).names:
        return None
    with budget.bounded(limits):
        value = templating.compile_bounded(source)({})
    return "" if value is None else str(value)


def _check_constant_secret(site: HookSite, scheme: str, text: str) -> None:
    """A secret that is a constant, however it is written, is checked here; one read from
    the environment, when serve starts (`signature.secret_problems`). Neither is shown."""
    try:
        secret = _constant_secret(text, budget.limits_of(site.settings or Settings()))
    except TemplateError as exc:
        # A bound's message names the bound; any other may quote the secret: its kind only.
        cause = exc.__cause__ or exc
        told = str(cause) if isinstance(cause, budget.LimitError) else \
            f"{type(cause).__name__} (its message is not shown: it may hold the secret)"
        site.error("/verify/secret", "verify.bad-secret", f"the secret's template fails: {told}")
        return
    problem = None if secret is None else secret_problem(scheme, secret)
    if problem is not None:
        site.error("/verify/secret", "verify.bad-secret", problem)


def build_hooks(site: HookSite, data: Mapping[str, Any]) -> Hooks | None:
    """The workflow's hooks, or None when it has none (the request path checks only that)."""
    if not any(key in data for key in ("verify", "idempotency", "rate_limit")):
        return None
    hooks = Hooks()
    verify = data.get("verify")
    if verify is not None:
        spec = VerifySpec(
            scheme=verify["scheme"], tolerance=verify.get("tolerance", DEFAULT_TOLERANCE),
            header=verify.get("header", "").lower(), algorithm=verify.get("algorithm", "sha256"),
            prefix=verify.get("prefix", ""), encoding=verify.get("encoding", "hex"),
            timestamp_header=verify.get("timestamp_header", "").lower())
        if spec.scheme == "hmac" and not spec.header:
            site.error("/verify", "schema.required",
                       "the hmac scheme needs the header that carries the signature")
        # A signature covers the body only: a parameter from the query string is not signed.
        if data.get("method", "POST") == "GET":
            site.error("/method", "verify.unsigned-params",
                       "a GET workflow's parameters come from the query string, which no "
                       "signature covers: a signed workflow takes POST")
        for param in site.unit.params:
            if param.in_query:
                site.error(f"/params/{param.name}/in", "verify.unsigned-params",
                           f"parameter {param.name} comes from the query string, which no "
                           "signature covers: a signed workflow's parameters come from its body")
        _check_constant_secret(site, spec.scheme, verify["secret"])
        secret = site.leaf_with(SECRET_NAMES, "/verify/secret", verify["secret"])
        hooks = replace(hooks, verify=spec, secret=secret)
    idempotency = data.get("idempotency")
    if idempotency is not None:
        reads_request = site.unit.reads_request  # what the steps read
        key = site.leaf_with(KEY_NAMES, "/idempotency/key", idempotency["key"])
        header = key_header(idempotency["key"])
        if header:
            site.unit.reads_request = reads_request  # the key alone does not need `request`
        hooks = replace(hooks, idempotency_key=key, idempotency_header=header,
                        idempotency_ttl=parse_duration(idempotency.get("ttl", "24h")))
    limit = data.get("rate_limit")
    if limit is not None:
        hooks = replace(hooks, rate_requests=limit["requests"],
                        rate_per=parse_duration(limit["per"]), rate_by=limit.get("by", "ip"))
    return hooks
