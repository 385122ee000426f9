"""What a run is made of: who it acts for, its context and services, what it changed, and
the reply that ends it.

Actions import no services: storage, the clock and the way to call a custom event all come
from the `RunContext` the interpreter builds for each run. The HTTP layer, the command line
and (later) the scheduler and auth build `Identity`s and read `Reply`s; none of them needs
the actions to do so.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from typing import Any

from gateway.core.clock import Clock, utc_now
from gateway.core.encoding import encode, size_over
from gateway.core.errors import ResponseTooLargeError
from gateway.core.settings import Settings
from gateway.runtime.accounts import Accounts
from gateway.runtime.origin import Fence, JobRun
from gateway.runtime.privacy import EXEMPT, Viewer
from gateway.runtime.services import Services
from gateway.storage.contract import Change, Checkpoint, Job, Option, Storage, TypeSpec

RUN_LOG = logging.getLogger("gateway.run")

# The names every run's templates see; API workflows also see `request` (the HTTP facts).
RUN_NAMES = frozenset({"params", "steps", "now", "run", "current_user", "secrets",
                       "option_sets"})
REQUEST_NAME = "request"
# A secret value shorter than this is not searched for in text: a one-character secret
# would otherwise turn every such character of the run log into `[redacted]`. (Values under
# a secret-looking key are redacted whatever their length.)
MIN_SECRET_LENGTH = 4


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a run acts for: `anonymous`, `user` (with `user_id` and the user's record, what
    templates see as `current_user`) or `admin`. `token_hash` is the hash of the token the
    call came with (what `logout_user` revokes); never the token itself."""

    kind: str = "anonymous"
    user_id: str | None = None
    user: Mapping[str, Any] | None = field(default=None, compare=False)
    token_hash: str | None = field(default=None, compare=False)

    @property
    def record(self) -> dict[str, Any]:
        """As the run log keeps it: a user's e-mail too, as Bubble's logs show the user."""
        email = self.user.get("email") if self.user is not None else None
        if isinstance(email, str):
            return {"kind": self.kind, "user_id": self.user_id, "email": email}
        return {"kind": self.kind, "user_id": self.user_id}


ANONYMOUS = Identity()
ADMIN = Identity("admin")


@dataclass(frozen=True, slots=True)
class Reply:
    """How a run ends: JSON `data`, or `text` with a content type; a status and headers."""

    data: Any = None
    text: str | None = None
    content_type: str | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


class Changes:
    """Every record a run wrote, collected per record: the first `before` and the last
    `after`, however often the run changed it. Handed to the run's commit, where database
    triggers and jobs will be enqueued in the same transaction as the change."""

    __slots__ = ("_by_record",)

    def __init__(self) -> None:
        self._by_record: dict[tuple[str, str], Change] = {}

    def add(self, *changes: Change) -> None:
        for change in changes:
            known = self._by_record.get((change.type, change.id))
            self._by_record[(change.type, change.id)] = (
                change if known is None else replace(known, after=change.after))

    def __iter__(self) -> Iterator[Change]:
        # A record created and deleted by the same run changed nothing anyone can see.
        return (c for c in self._by_record.values() if c.before is not None or c.after is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __bool__(self) -> bool:
        return bool(self._by_record)


CallEvent = Callable[["RunContext", str, Mapping[str, Any]], Awaitable[Any]]


@dataclass(slots=True)
class RunContext:
    """The state and services of one run (custom events called inline get their own, and
    share the run's `changes`)."""

    run_id: str
    workflow: str
    now: datetime  # when the run started, by `clock`
    call_event: CallEvent
    # The run's clock (the interpreter's): what a record's Created and Modified Date read.
    clock: Clock = utc_now
    storage: Storage | None = None
    data_types: Mapping[str, TypeSpec] = field(default_factory=dict)
    identity: Identity = ANONYMOUS
    ignore_privacy_rules: bool = False
    depth: int = 0
    source: str = "http"
    settings: Settings = field(default_factory=Settings)
    log: logging.Logger = RUN_LOG
    hidden: frozenset[str] = frozenset()  # secret values, kept out of what a step logs
    # Values steps took as passwords, kept out of the run log whatever their parameter is
    # called (shared with the custom events the run calls).
    passwords: set[str] = field(default_factory=set)
    steps: list[dict[str, Any]] = field(default_factory=list)
    changes: Changes = field(default_factory=Changes)
    accounts: Accounts | None = None
    viewer: Viewer = EXEMPT  # the privacy rules the run's reads go through
    services: Services = field(default_factory=Services)  # outbound HTTP, the mailer
    # Jobs the run scheduled: written at its commit, with the triggers of its changes, and
    # only if it succeeds (shared with the custom events the run calls).
    jobs: list[Job] = field(default_factory=list)
    # The job a run was started by (its templates see `JobRun.shown`; its commit ends it:
    # see `gateway.scheduler.enqueue`), and how many scheduled runs led to it.
    job: JobRun | None = None
    schedule_depth: int = 0
    # An idempotent run's hold on its key, checked in the run's transaction as it commits.
    fence: Fence | None = None
    # Work handed on once the run has committed (`gateway.runtime.after_commit`): an
    # e-mail that must not hold the answer, bytes of files the run dropped.
    after_commit: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # The caller's address (a run over HTTP): behind trusted proxies, the forwarded one.
    client: str | None = None
    # The workflow's time zone (`timezone`): templates see `now` in it. None: UTC.
    zone: tzinfo | None = None
    # The `traceparent` of the run's span, when tracing is on and kept the run's trace: in
    # the run log (its trace id), and in the jobs it schedules, whose runs link to it.
    trace: str | None = None
    # What flow control did to the jobs the run scheduled (a job skipped by `singleton`,
    # one written over the waiting job of its `debounce` key), said in the run log.
    flow: list[str] = field(default_factory=list)
    # A job's run only: the checkpoints of earlier runs of its job by place, that its
    # steps restore (see `gateway.runtime.checkpoints`; shared with the custom events it
    # calls); None in any other run, whose steps are not checkpointed.
    restore: dict[str, Checkpoint] | None = None
    # In a job's run, the place of the step running now (`3`; `3.2` in a custom event
    # called by step 3), and what the places of this context's steps start with (`3.`).
    place: str = ""
    prefix: str = ""

    def remark(self, **facts: Any) -> None:
        """Add facts to the run log's entry of the step that is running."""
        if self.steps:
            self.steps[-1].update(facts)


def new_scope(ctx: RunContext, params: dict[str, Any], secrets: Mapping[str, str],
              request: Mapping[str, Any] | None,
              options: Mapping[str, tuple[Option, ...]] | None = None) -> dict[str, Any]:
    """The names a run's templates see (`RUN_NAMES`, and `request`); `options` are the
    option sets' options, in order, by set (`option_sets.status`)."""
    return {
        "params": params, "steps": {},
        "now": ctx.now if ctx.zone is None else ctx.now.astimezone(ctx.zone),
        "run": {"id": ctx.run_id, "workflow": ctx.workflow, "depth": ctx.depth,
                "source": ctx.source, **({} if ctx.job is None else ctx.job.shown)},
        "current_user": current_user(ctx.identity, ctx.viewer),
        "secrets": secrets, REQUEST_NAME: request or {}, "option_sets": options or {},
    }


def current_user(identity: Identity, viewer: Viewer = EXEMPT) -> Mapping[str, Any] | None:
    """What templates see as `current_user`: the user's record as the user sees it through
    the user type's privacy rules (whole when `viewer` is exempt from them: admin keys,
    `ignore_privacy_rules`; then shared, not copied: templates cannot change it), or None.
    The rules themselves judge with the whole record (`Viewer.user`)."""
    if identity.user is not None:
        if viewer.of("user") is None:
            return identity.user
        return viewer.cut("user", dict(identity.user))
    return {"_id": identity.user_id} if identity.user_id else None


def reply_bytes(reply: Reply | None, holds_records: bool, limit: int) -> bytes | None:
    """A reply over `limit` (`limits.max_response_bytes`) fails the run, before it is written out.
    A run that may hold records is measured without writing it out (it could be huge);
    any other reply is made of parameters and template results, each bounded already,
    and writing it is the cheaper measure: its JSON is returned, to be sent as it is.
    A value JSON cannot hold fails the run here, recorded, rather than the response."""
    if reply is None:
        return None
    value = reply.data if reply.text is None else reply.text
    encoded = None
    if holds_records:
        size = size_over(value, limit)
    elif isinstance(value, str):
        size = len(value)  # a lower bound in UTF-8, exact in ASCII
    elif value is None:
        size = 0
    else:
        encoded = encode(value)
        size = len(encoded)
    if size > limit:
        raise ResponseTooLargeError(f"The response is larger than {limit} bytes "
                                    "(limits.max_response_bytes)")
    return encoded
