"""The storage contract: data type declarations, search terms, changes, and the protocols.

`Storage` is a backend's lifecycle plus one attribute per role (`records`, `runs`), each a
narrow protocol, so a caller that needs only records depends only on `RecordStore`. Both
backends (SQLite and PostgreSQL) implement them; one contract test suite runs against both,
so callers never need to know which one they talk to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from gateway.storage.jobstore import JOB_STATUSES as JOB_STATUSES
from gateway.storage.jobstore import Job as Job
from gateway.storage.jobstore import JobEnd as JobEnd
from gateway.storage.jobstore import JobStore as JobStore
from gateway.storage.jobstore import PendingBound as PendingBound
from gateway.storage.jobstore import Position as Position
from gateway.storage.runlog import RunLog as RunLog
from gateway.storage.runlog import RunLogLimits as RunLogLimits
from gateway.storage.runlog import RunStats as RunStats

SYSTEM_KEYS = frozenset({"_id", "created_at", "modified_at", "created_by"})
CONSTRAINTS = frozenset({
    "equals", "not_equal", "is_empty", "is_not_empty", "text_contains", "not_text_contains",
    "greater_than", "less_than", "in", "not_in", "contains", "not_contains"})


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One declared field; `type` is a scalar type name or another data type's name."""

    name: str
    type: str
    list: bool = False
    unique: bool = False
    indexed: bool = False
    default: Any = None


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """A data type: its name and declared fields (records may hold undeclared keys too)."""

    name: str
    fields: Mapping[str, FieldSpec] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Constraint:
    """One search condition: `key` is a field name or one of `SYSTEM_KEYS`."""

    key: str
    constraint: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class SortKey:
    key: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    """One page of search results.

    `count` is the total number of matching records, `remaining` how many come after this
    page, and `cursor` an opaque string that fetches the next page (None on the last one).
    """

    results: list[dict[str, Any]]
    count: int
    remaining: int
    cursor: str | None


@dataclass(frozen=True, slots=True)
class Change:
    """What one write did to one record: `before` is None for a create, `after` for a delete.

    Both are read in the transaction of the write itself, so they are exactly the states the
    write went from and to (what database triggers are given).
    """

    type: str
    id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @property
    def record(self) -> dict[str, Any]:
        """The record after the change, or as it was before it was deleted."""
        record = self.after if self.after is not None else self.before
        assert record is not None, f"a change of {self.type} {self.id} with no record"
        return record


# --- the roles -------------------------------------------------------------------------
# Each role is one narrow protocol, and a backend exposes it as one attribute of `Storage`.
# Adding a role (jobs, keys, idempotency…): its protocol here, one property on `Storage`,
# and per backend one module (`sqlite_jobs.py`) whose class `SqliteStorage` sets as the
# attribute. mypy checks each backend against `Storage` (see `gateway/storage/__init__.py`).


class RecordStore(Protocol):
    """Records of the declared data types: writes report their `Change`s.

    A value neither backend can hold faithfully (NUL or invalid Unicode in text, an integer
    beyond 64 bits, nesting past `limits.MAX_DEPTH`, an indexed text past
    `limits.MAX_INDEXED_TEXT_BYTES`) is refused with `ValidationError` on both; an id no
    record can have is simply not found. A database that cannot be reached or written
    raises `StorageUnavailableError`."""

    async def create(
        self, type: str, fields: Mapping[str, Any], created_by: str | None = None
    ) -> Change: ...
    async def get(self, type: str, id: str) -> dict[str, Any] | None: ...
    # Raises RecordNotFoundError when there is no such record. `increment` adds an amount to
    # number fields ({field: amount}) in the write itself, from the record's latest value,
    # so concurrent increments never lose one another (a missing value counts as 0).
    async def update(self, type: str, id: str, fields: Mapping[str, Any],
                     increment: Mapping[str, Any] | None = None) -> Change: ...
    # Missing ids are skipped; the changes come in the order of `ids`.
    async def update_many(
        self, type: str, ids: Sequence[str], fields: Mapping[str, Any],
        increment: Mapping[str, Any] | None = None,
    ) -> list[Change]: ...
    # None when there was no such record.
    async def delete(self, type: str, id: str) -> Change | None: ...
    async def delete_many(self, type: str, ids: Sequence[str]) -> list[Change]: ...
    async def search(
        self,
        type: str,
        constraints: Sequence[Constraint] = (),
        sort: Sequence[SortKey] = (),
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page: ...


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An admin API key as it is kept: never the key itself."""

    label: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class KeyStore(Protocol):
    """Admin API keys, kept as a SHA-256 of the key (a key is 256 random bits: a fast hash
    is as safe as a slow one, and a lookup by hash needs no comparison in Python)."""

    # Raises DuplicateError when the label is taken (by a key revoked or not).
    async def create_key(self, label: str, hash: str, at: datetime) -> None: ...
    async def list_keys(self) -> list[ApiKey]: ...
    # False when there is no such key, or it was revoked already.
    async def revoke_key(self, label: str, at: datetime) -> bool: ...
    # The key with this hash, unless revoked.
    async def find_key(self, hash: str) -> ApiKey | None: ...
    async def touch_key(self, hash: str, at: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class Session:
    """A user's session token as it is kept: never the token itself."""

    user_id: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime


class UserStore(Protocol):
    """Users' passwords and session tokens. A user is a record of type `user`; its password
    hash and its tokens live apart from it, so no search or template ever sees them. The
    e-mail a user logs in with is the one its record shows: an update that sets a user's
    `email` moves the log-in in the same transaction (or refuses an address another user's
    password holds, and an empty one for a user who has a password)."""

    # The user record and its password in one transaction; DuplicateError when the e-mail
    # (folded to lower case by the caller) is taken.
    async def create_user(self, email: str, fields: Mapping[str, Any], password_hash: str,
                          created_by: str | None = None) -> Change: ...
    # (user id, password hash) of the user with this e-mail, or None.
    async def credential(self, email: str) -> tuple[str, str] | None: ...
    async def create_token(self, hash: str, user_id: str, at: datetime,
                           expires_at: datetime) -> None: ...
    async def find_token(self, hash: str) -> Session | None: ...
    async def touch_token(self, hash: str, at: datetime) -> None: ...
    # Whether there was such a token; `committed` is called once the revocation commits
    # (at once outside a run's transaction, never if it rolls back).
    async def revoke_token(self, hash: str,
                           committed: Callable[[], None] | None = None) -> bool: ...
    # Delete the tokens past their lifetime or unused since `idle_since`; how many.
    async def purge_tokens(self, now: datetime, idle_since: datetime) -> int: ...


@dataclass(frozen=True, slots=True)
class Claim:
    """What claiming an idempotency key found: `claimed` (the caller runs and then calls
    `finish` or `release`), `running` (another request holds it, within its lease) or
    `done` (the stored answer: `status`, `headers`, `body`)."""

    state: str
    status: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


# Why an idempotent run's writes were not kept (`IdempotencyStore.fence`).
LOST_KEY = ("another request with the same idempotency key took it over while this one ran "
            "(its lease, the run's time limit, had ended): what it wrote was not kept; retry "
            "later for that request's answer")


class IdempotencyStore(Protocol):
    """Idempotency keys per workflow (`scope`), claimed atomically across instances. A claim
    holds its key until `lease_until` (a crashed run's key frees itself then), an answer
    until `expires_at`. Keys are hashed by the caller, so they have a bounded size."""

    async def claim(self, scope: str, key: str, owner: str, now: datetime,
                    lease_until: datetime, expires_at: datetime) -> Claim: ...
    # Store the answer of the claim `owner` holds (nothing when it lost the key meanwhile).
    async def finish(self, scope: str, key: str, owner: str, status: int,
                     headers: Mapping[str, str], body: bytes) -> None: ...
    # Give the key up, so that the next request with it runs (the run failed).
    async def release(self, scope: str, key: str, owner: str) -> None: ...
    # In the run's transaction, as it commits: the claim `owner` holds, kept until
    # `lease_until` (the answer's storing); `KeyTakenError` when another claim took the
    # key (the run's lease ended), which rolls back what the run wrote.
    async def fence(self, scope: str, key: str, owner: str, lease_until: datetime) -> None: ...
    # Delete the answers expired at `now`; how many (SQLite keeps every answer a key was
    # given, and its newest answer whatever its age; PostgreSQL a key's last).
    async def purge_keys(self, now: datetime) -> int: ...


class RateCounter(Protocol):
    """Rate-limit counters shared by every instance of the gateway: one per caller and
    fixed window (`bucket`, the window's number)."""

    # Count one call; the calls counted in this window so far, this one included. The
    # counter may be deleted after `expires_at` (the end of its window).
    async def hit(self, scope: str, who: str, bucket: int, expires_at: datetime) -> int: ...
    # Delete the counters of windows that ended; how many.
    async def purge_counters(self, now: datetime) -> int: ...


class Transaction(Protocol):
    """The storage work of one task (a run) as one transaction (`Storage.begin`)."""

    async def commit(self) -> None: ...
    async def rollback(self) -> None: ...


class Lifecycle(Protocol):
    """Opening, migrating, checking and closing one database."""

    url: str
    # The migrations the last `open()` applied (empty when the schema was up to date).
    migrations_applied: list[str]

    # Connect and migrate; with `sync_indexes`, also make the per-type indexes match `types`
    # (creating the missing, dropping the undeclared). Tools that only read leave them be.
    async def open(self, types: Sequence[TypeSpec] = (), *, sync_indexes: bool = True) -> None: ...
    # On an open store (a config reloaded): make the indexes match `types` in one transaction,
    # then serve them; when that fails (a unique index over duplicate values), nothing changes.
    async def apply_types(self, types: Sequence[TypeSpec]) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> list[str]: ...
    # Raises StorageError, within about a second, when the store cannot serve.
    async def ping(self) -> None: ...
    # The current task's storage work, from its first write, as one transaction that ends
    # with the returned object's commit() or rollback(); reads after the first write see it.
    # Inside one already open, the work joins it. On SQLite the transaction holds the one
    # writer, `seconds` at most; on PostgreSQL a connection.
    def begin(self, seconds: float) -> Transaction: ...


class Storage(Lifecycle, Protocol):
    """A backend: its lifecycle, and each role as an attribute (`storage.records`)."""

    @property
    def records(self) -> RecordStore: ...
    @property
    def runs(self) -> RunLog: ...
    @property
    def keys(self) -> KeyStore: ...
    @property
    def users(self) -> UserStore: ...
    @property
    def idempotency(self) -> IdempotencyStore: ...
    @property
    def rates(self) -> RateCounter: ...
    @property
    def jobs(self) -> JobStore: ...
