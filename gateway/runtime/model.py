"""The compiled model: frozen, with every template compiled. Built by the compiler only."""

# `SCALAR_TYPES` and `Param` are part of the model; they live in `gateway.runtime.param`, which the
# declaration of actions needs too.

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from gateway.config.source import DocumentKind
from gateway.core.settings import Settings
from gateway.runtime.action_spec import Action
from gateway.runtime.param import SCALAR_TYPES, Param
from gateway.runtime.privacy import Privacy
from gateway.storage.contract import OptionSet, TypeSpec
from gateway.templates.templating import Compiled

__all__ = ["ROUTE_PREFIX", "SCALAR_TYPES", "Hooks", "Param", "RecurringEvent", "Registry",
           "ReplyShape", "Retry", "Step", "TestCase", "Trigger", "Workflow", "WorkflowTest"]

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


# How far a signed timestamp may be from now, in seconds, when `verify` names none.
DEFAULT_TOLERANCE = 300


@dataclass(frozen=True, slots=True)
class VerifySpec:
    """A workflow's `verify:` (the secret, a template, is evaluated by the caller)."""

    scheme: str
    tolerance: int = DEFAULT_TOLERANCE
    header: str = ""  # `hmac` only: lower-case
    algorithm: str = "sha256"
    prefix: str = ""
    encoding: str = "hex"
    timestamp_header: str = ""  # lower-case


@dataclass(frozen=True, slots=True)
class Hooks:
    """What an API workflow does around its run for webhooks: `verify` (a signature over
    the raw body, keyed by the `secret` template), `idempotency_key` (a template; one run
    per key within `idempotency_ttl`) and a `rate_limit` of `requests` per `per` by `by`."""

    verify: VerifySpec | None = None
    secret: Compiled | None = None
    idempotency_key: Compiled | None = None
    # the key's header (lower-case) when the key is exactly `request.headers[<name>]`: read
    # from the request as it came, without building `request` for the key's template
    idempotency_header: str = ""
    idempotency_ttl: timedelta = timedelta(hours=24)
    rate_requests: int = 0  # 0: no rate limit
    rate_per: timedelta = timedelta(seconds=1)
    rate_by: str = "ip"


@dataclass(frozen=True, slots=True)
class Retry:
    """How a failed job is retried: `max_attempts` runs in all, waiting a random time up
    to `backoff` x 2^(attempt-1), at most `max_backoff` (full jitter)."""

    max_attempts: int = 1
    backoff: timedelta = timedelta(seconds=10)
    max_backoff: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Concurrency:
    """An API workflow's or custom event's `concurrency`: at most `limit` of its jobs with
    the same key (`key`, a template over `params`, rendered when a job is scheduled) run at
    once, on every instance sharing the database; the others wait, pending."""

    key: Compiled
    limit: int = 1
    max_wait: timedelta = timedelta(0)  # how long an HTTP call waits for room


@dataclass(frozen=True, slots=True)
class Throttle:
    """`throttle`: at most `limit` runs with the same key start per `per`, on every
    instance; the others wait, pending, and start in order as the period frees room."""

    key: Compiled
    limit: int
    per: timedelta
    max_wait: timedelta = timedelta(0)  # how long an HTTP call waits for a start


@dataclass(frozen=True, slots=True)
class Debounce:
    """`debounce`: jobs scheduled with the same key while one of them waits collapse into
    it, which runs `period` after the last, with the last one's params."""

    key: Compiled
    period: timedelta


@dataclass(frozen=True, slots=True)
class Flow:
    """An API workflow's or custom event's flow control: `concurrency`, `throttle`,
    `debounce` and `singleton` (a key template: a job scheduled while another of its key
    waits or runs is skipped). Every key is rendered over the job's params when it is
    scheduled (`gateway.scheduler.enqueue`)."""

    concurrency: Concurrency | None = None
    throttle: Throttle | None = None
    debounce: Debounce | None = None
    singleton: Compiled | None = None

    @property
    def admits(self) -> bool:
        """Whether HTTP calls to the workflow are admitted by keys (`concurrency` and
        `throttle` hold while a run runs or starts; `debounce` and `singleton` apply to
        jobs only)."""
        return self.concurrency is not None or self.throttle is not None

    @property
    def max_wait(self) -> timedelta:
        """How long an HTTP call waits for room under its keys before its 429."""
        return max(timedelta(0), *(c.max_wait for c in (self.concurrency, self.throttle)
                                   if c is not None))


@dataclass(frozen=True, slots=True)
class ReplyShape:
    """A status and content type a workflow's steps may answer with (None: decided by a
    template at run time), for its description in the OpenAPI document."""

    status: int | None
    content_type: str | None = None


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
    file_params: tuple[Param, ...] = ()  # files and images: uploads kept before the steps run
    coerce: Callable[[Mapping[str, Any]], dict[str, Any]] = dict
    hooks: Hooks | None = None  # verify, idempotency, rate_limit: None for most workflows
    retry: Retry = Retry()
    replies: tuple[ReplyShape, ...] = ()  # what its steps (and the events it calls) answer
    # A hash of its own document (12 hex digits): a job keeps the one it was scheduled
    # under, and its run says so when it ran another (`gateway.scheduler.worker`).
    version: str = ""
    # Its `timezone`: gives a zone (or its name) from `request` (or `before`/`after`); None:
    # UTC, and the run pays nothing for zones.
    timezone: Compiled | None = None
    # Its `error_redirect`: gives the URL a failed run redirects to (from `request`).
    error_redirect: Compiled | None = None
    # Its flow control (`concurrency`, `throttle`, `debounce`, `singleton`): keys its jobs
    # (`gateway.scheduler.enqueue`) and admits its HTTP calls (`gateway.api.flow_gate`);
    # None: none.
    flow: Flow | None = None


@dataclass(frozen=True, slots=True)
class RecurringEvent:
    """A recurring event: global (`cron` in `timezone`, or `every`) or per record of `type`
    (started by `set_recurring_event`). It runs the API workflow `workflow` with `params`,
    or its own steps (`steps`, a workflow whose templates see `thing`)."""

    name: str
    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"
    misfire: str = "skip"
    type: str | None = None
    workflow: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    steps: Workflow | None = None
    location: str = ""
    retry: Retry | None = None  # its own; else that of the workflow it runs

    @property
    def per_record(self) -> bool:
        return self.type is not None


@dataclass(frozen=True, slots=True)
class Trigger:
    """A database trigger: `run` (its steps, and its `only_when` over `before` and `after`)
    after records of `type` are created, changed or deleted (`events`)."""

    name: str
    type: str
    events: frozenset[str]
    run: Workflow
    location: str = ""


@dataclass(frozen=True, slots=True)
class TestCase:
    """One case of a workflow test: a call, and what its answer must be."""

    name: str
    workflow: str
    params: Mapping[str, Any]
    caller: str = "anonymous"  # anonymous | admin | user | a user's e-mail
    headers: Mapping[str, str] = field(default_factory=dict)
    records: tuple[tuple[str, Mapping[str, Any]], ...] = ()  # (type, fields), made first
    status: int | None = None
    code: str | None = None
    has_response: bool = False
    response: Any = None
    response_headers: Mapping[str, str] = field(default_factory=dict)
    location: str = ""  # file:line of the case


@dataclass(frozen=True, slots=True)
class WorkflowTest:
    """A `workflow_test` document: cases run in order against one fresh database."""

    name: str
    workflow: str
    cases: tuple[TestCase, ...]
    location: str = ""


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
        return self.of_kind(DocumentKind.API_WORKFLOW)

    @property
    def events(self) -> Mapping[str, Workflow]:
        return self.of_kind(DocumentKind.CUSTOM_EVENT)

    @property
    def option_sets(self) -> Mapping[str, OptionSet]:
        return self.of_kind(DocumentKind.OPTION_SET)

    @property
    def data_types(self) -> Mapping[str, TypeSpec]:
        return self.of_kind(DocumentKind.DATA_TYPE)

    @property
    def recurring(self) -> Mapping[str, RecurringEvent]:
        return self.of_kind(DocumentKind.RECURRING_EVENT)

    @property
    def triggers(self) -> Mapping[str, Trigger]:
        return self.of_kind(DocumentKind.DATABASE_TRIGGER)

    @property
    def tests(self) -> Mapping[str, WorkflowTest]:
        return self.of_kind(DocumentKind.WORKFLOW_TEST)

    def exposed(self) -> list[Workflow]:
        return sorted((w for w in self.workflows.values() if w.expose), key=lambda w: w.name)
