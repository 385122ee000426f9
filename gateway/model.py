"""The compiled model: frozen, with every template compiled. Built by the compiler only."""

# `SCALAR_TYPES` and `Param` are part of the model; they live in `gateway.param`, which the
# declaration of actions needs too.

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from gateway.action import Action
from gateway.param import SCALAR_TYPES, Param
from gateway.privacy import Privacy
from gateway.settings import Settings
from gateway.signature import VerifySpec
from gateway.storage.interface import TypeSpec
from gateway.templating import Compiled

__all__ = ["ROUTE_PREFIX", "SCALAR_TYPES", "Hooks", "Param", "Registry", "Step", "Workflow"]

ROUTE_PREFIX = "/api/1.1/wf"  # an exposed workflow answers at ROUTE_PREFIX/<name>


@dataclass(frozen=True, slots=True)
class Step:
    """One step, ready to run: its arguments compiled, its action's declaration bound."""

    index: int
    action: Action
    args: Compiled
    id: str | None = None
    only_when: Compiled | None = None
    continue_on_error: bool = False
    location: str = ""


@dataclass(frozen=True, slots=True)
class Hooks:
    """What an API workflow does around its run for webhooks: `verify` (a signature over
    the raw body, keyed by the `secret` template), `idempotency_key` (a template; one run
    per key within `idempotency_ttl`) and a `rate_limit` of `requests` per `per` by `by`."""

    verify: VerifySpec | None = None
    secret: Compiled | None = None
    idempotency_key: Compiled | None = None
    idempotency_ttl: timedelta = timedelta(hours=24)
    rate_requests: int = 0  # 0: no rate limit
    rate_per: timedelta = timedelta(seconds=1)
    rate_by: str = "ip"


@dataclass(frozen=True, slots=True)
class Workflow:
    """An API workflow or a custom event (`kind` says which)."""

    kind: str
    name: str
    params: tuple[Param, ...]
    steps: tuple[Step, ...]
    label: str = ""
    expose: bool = False
    auth: str = "admin"
    method: str = "POST"
    ignore_privacy_rules: bool = False
    only_when: Compiled | None = None
    return_200_if_condition_fails: bool = False
    returns: tuple[Param, ...] = ()
    location: str = ""
    uses_request: bool = False  # a template reads `request`: the HTTP layer builds it
    may_wait: bool = True  # some step waits on something (a store, an event): time it out
    writes: bool = False  # some step writes records
    record_params: tuple[Param, ...] = ()  # parameters of a data type: loaded from the store
    coerce: Callable[[Mapping[str, Any]], dict[str, Any]] = dict
    hooks: Hooks | None = None  # verify, idempotency, rate_limit: None for most workflows


@dataclass(frozen=True, slots=True)
class Registry:
    """Everything one config compiles to, by kind of document and name. Immutable: a new
    config is a new registry. A new kind of document is a new key of `units` (and a row of
    the compiler's table of kinds), not a new field."""

    units: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    files: tuple[str, ...] = ()
    privacy: Mapping[str, Privacy] = field(default_factory=dict)  # by data type; none: public
    # The data types exposed on the Data API, by their URL name (`api: {expose: true}`).
    data_api: Mapping[str, str] = field(default_factory=dict)

    def of_kind(self, kind: str) -> Mapping[str, Any]:
        return self.units.get(kind, {})

    @property
    def workflows(self) -> Mapping[str, Workflow]:
        return self.of_kind("api_workflow")

    @property
    def events(self) -> Mapping[str, Workflow]:
        return self.of_kind("custom_event")

    @property
    def data_types(self) -> Mapping[str, TypeSpec]:
        return self.of_kind("data_type")

    def exposed(self) -> list[Workflow]:
        return sorted((w for w in self.workflows.values() if w.expose), key=lambda w: w.name)
