"""What both backends share, above their connections and their SQL.

A backend owns how it connects and the SQL it sends; the rest is decided here, once: which
data types and indexes a store serves and how a stored row reads as a record (`Catalog`),
how a unique violation becomes a `DuplicateError`, which indexes to drop and create, which
migrations are pending, how recorded runs wait to be written in batches (`RunQueue`), and
the idempotency keys a process remembers (`KeyMemory`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from gateway.core.encoding import loads as codec_loads
from gateway.core.errors import DuplicateError, RecordNotFoundError, StorageError, TooManyJobsError
from gateway.storage import codec, limits
from gateway.storage.interface import Change, Job, PendingBound, TypeSpec
from gateway.storage.limits import Increments
from gateway.storage.query import Dialect, IndexDef, index_definitions, literal
from gateway.storage.sqlfile import Migration, migrations

# Runs written per statement: large enough that the log costs little per run, small enough
# for SQLite's limit on a statement's variables and to never hold up a request for long.
RUN_BATCH = 500
DEFAULT_MAX_QUEUE = 10_000
WARN_SECONDS = 60.0
# Size-aware retention: how many of the newest runs give the average size of a run, and
# how many runs one delete removes (each its own commit, so writes never wait long).
SIZE_SAMPLE = 1000
TRIM_CHUNK = 1000
log = logging.getLogger("gateway.storage")
# A user's log-in follows the e-mail its record shows (each backend's `follow_email`).
USER = "user"
EMAIL_TAKEN = "another user already has this email"
EMAIL_NEEDED = ("a user who has a password logs in with its email: the email cannot be "
                "cleared")

R = TypeVar("R")


class StoredRow(NamedTuple):
    """A row of `gateway_records` as the driver gave it, with `data` decoded and the
    timestamps as aware datetimes."""

    id: str
    type: str
    data: dict[str, Any]
    created_at: datetime
    modified_at: datetime
    created_by: str | None


class Catalog:
    """The data types a store was opened with, and the per-type indexes they declare."""

    def __init__(self) -> None:
        self.types: dict[str, TypeSpec] = {}
        self.indexes: dict[str, IndexDef] = {}

    def declare(self, dialect: Dialect, types: Sequence[TypeSpec]) -> list[IndexDef]:
        """Serve `types` from now on; returns the indexes they need."""
        defs = self.plan(dialect, types)
        self.types = {spec.name: spec for spec in types}
        self.indexes = {d.name: d for d in defs}
        return defs

    @staticmethod
    def plan(dialect: Dialect, types: Sequence[TypeSpec]) -> list[IndexDef]:
        """The indexes `types` need, nothing declared yet."""
        return [d for spec in types for d in index_definitions(dialect, spec)]

    def unique_fields(self, type: str) -> bool:
        """Whether a record of `type` may be refused for a value another one holds."""
        spec = self.types.get(type)
        return spec is not None and any(f.unique for f in spec.fields.values())

    def with_defaults(self, type: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The fields of a new record, its declared defaults added, checked storable."""
        data = codec.with_defaults(self.types.get(type), fields)
        limits.check_record(self.types.get(type), type, data)
        return data

    def changes(self, type: str, fields: Mapping[str, Any],
                increment: Mapping[str, Any] | None) -> Increments:
        """The `increment` of an update, checked with its `fields`: both storable, each
        amount a number, no field both set and incremented."""
        spec = self.types.get(type)
        limits.check_record(spec, type, fields)
        limits.check_record(spec, type, increment or {})
        return limits.increments(spec, type, fields, increment or {})

    def record(self, row: StoredRow) -> dict[str, Any]:
        data = codec.decode_fields(self.types.get(row.type), row.data)
        return {
            "_id": row.id,
            "_type": row.type,
            "created_at": row.created_at,
            "modified_at": row.modified_at,
            "created_by": row.created_by,
            **data,
        }

    def translate(self, exc: Exception, violated_index: str | None = None) -> StorageError:
        """The error to raise for a driver's `exc`; `violated_index` names the unique index
        it broke, if that is what happened."""
        found = self.indexes.get(violated_index) if violated_index else None
        if found is not None:
            return DuplicateError(
                f"another {found.type_name} already has this {found.field}",
                found.type_name,
                found.field,
            )
        return StorageError(f"database error: {exc}")


# --- schema ----------------------------------------------------------------------------


def index_changes(
    existing: Iterable[str], defs: Sequence[IndexDef]
) -> tuple[list[str], list[IndexDef]]:
    """(the indexes to drop, the indexes to create) to make `existing` match `defs`."""
    present = set(existing)
    declared = {d.name for d in defs}
    return sorted(present - declared), [d for d in defs if d.name not in present]


def create_index_sql(template: str, index: IndexDef) -> str:
    """A backend's `create_index` block filled in for `index`."""
    return template.format(
        unique="UNIQUE" if index.unique else "",
        name=index.name,
        expression=index.expression,
        type=literal(index.type_name),
    )


def pending_migrations(backend: str, applied: Iterable[str]) -> list[Migration]:
    """The backend's migrations not yet `applied`, in the order they must be applied."""
    done = set(applied)
    return [m for m in migrations(backend) if m.name not in done]


# --- the run log -----------------------------------------------------------------------


class RunQueue(Generic[R]):
    """Recorded runs waiting to be written, oldest first, taken in batches, at most `limit`.

    One side adds (the event loop), the other takes (the SQLite writer thread or the
    PostgreSQL flusher task); a deque's append and popleft are safe across threads. A run
    that finds the queue full (the database is down or too slow) is dropped and counted,
    and so is one the database refuses even as its summary: `dropped` is the total since
    start, and the warning about it is logged at most once per `WARN_SECONDS`.
    """

    def __init__(self, limit: int = DEFAULT_MAX_QUEUE) -> None:
        self._rows: collections.deque[R] = collections.deque()
        self.limit = limit
        self.dropped = 0
        self.summarised = 0
        self.added = 0  # every run queued since start (what the retention task trims after)
        self._warned_at = -WARN_SECONDS

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: R) -> bool:
        """Queue one run; True when this run completes a batch (time to write)."""
        if len(self._rows) >= self.limit:
            self.drop(1, "the queue of runs to write is full")
            return False
        self._rows.append(row)
        self.added += 1
        return len(self._rows) == RUN_BATCH

    def take(self, limit: int | None = RUN_BATCH) -> list[R]:
        """Up to `limit` of the oldest runs (all of them for None), out of the queue."""
        count = len(self._rows) if limit is None else min(limit, len(self._rows))
        return [self._rows.popleft() for _ in range(count)]

    def put_back(self, rows: Sequence[R]) -> None:
        """Return runs that could not be written to the front, for a retry; the newest runs
        beyond the limit are dropped."""
        self._rows.extendleft(reversed(rows))
        excess = len(self._rows) - self.limit
        if excess > 0:
            for _ in range(excess):
                self._rows.pop()
            self.drop(excess, "the queue of runs to write is full")

    def drop(self, count: int, why: str) -> None:
        """Count `count` runs lost, and say so (at most once per `WARN_SECONDS`)."""
        self.dropped += count
        self.warn("run log: %d run(s) dropped so far (%s)", self.dropped, why)

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_SECONDS:
            self._warned_at = now
            log.warning(message, *args)


def write_splitting(rows: Sequence[R], write: Callable[[Sequence[R]], None],
                    refused: Callable[[Exception], bool]) -> list[tuple[R, Exception]]:
    """Write `rows`; when the database refuses a batch, each half is tried on its own, down
    to single rows, so one bad run never holds up the others. Returns the runs refused, each
    with its error; an error that is not a refusal (`refused(exc)` is false) is raised."""
    try:
        write(rows)
        return []
    except Exception as exc:
        if not refused(exc):
            raise
        if len(rows) == 1:
            return [(rows[0], exc)]
    middle = len(rows) // 2
    return (write_splitting(rows[:middle], write, refused)
            + write_splitting(rows[middle:], write, refused))


def size_per_run(rows: Sequence[Sequence[Any]], overhead: int) -> int:
    """Bytes a run takes: the average size of the sampled documents (the `run_size`
    query's one value, None when there is no run) plus the backend's row overhead."""
    average = rows[0][0] if rows else None
    return int(average) + overhead if average is not None else 0


def the_change(changes: Sequence[Change], type: str, id: str) -> Change:
    """The one change of a single-record write; `RecordNotFoundError` when there was none."""
    if not changes:
        raise RecordNotFoundError(f"no {type} with id {id}")
    return changes[0]


def row_budget(max_rows: int | None, max_bytes: int | None, run_size: int) -> int | None:
    """How many runs may stay: `max_rows`, and as many as fit `max_bytes` at `run_size`
    bytes each; None when neither applies."""
    budgets = [] if max_rows is None else [max_rows]
    if max_bytes is not None and run_size > 0:
        budgets.append(max_bytes // run_size)
    return min(budgets) if budgets else None


def batches(rows: Sequence[R], size: int = RUN_BATCH) -> Iterator[Sequence[R]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


# --- jobs ------------------------------------------------------------------------------


def job_from_row(row: Sequence[Any], when: Callable[[Any], datetime | None]) -> Job:
    """A `gateway_jobs` row (the columns of the `get_job` query) as a `Job`; `when` reads
    the backend's timestamps (ISO text on SQLite, datetimes on PostgreSQL)."""
    data = row[14]
    due = when(row[4])
    assert due is not None, "a job without a due time"
    return Job(id=row[0], workflow=row[1], source=row[2], status=row[3], due_at=due,
               attempt=row[5], lease_until=when(row[6]), worker=row[7], unique_key=row[8],
               subject=row[9], created_at=when(row[10]), finished_at=when(row[11]),
               run_id=row[12], error=row[13], claims=row[15],
               data=codec_loads(data) if isinstance(data, (str, bytes)) else data)


def check_pending(bound: PendingBound, counts: Mapping[str, int], added: Iterable[str]) -> None:
    """Raise `TooManyJobsError` when the pending jobs `counts` holds (by workflow, the jobs
    just added included) pass `bound`, in all or for a workflow of `added`."""
    if bound.per_workflow is not None:
        for workflow in sorted(set(added)):
            if counts.get(workflow, 0) > bound.per_workflow:
                raise TooManyJobsError(
                    f"Too many jobs of workflow '{workflow}' wait to run (more than "
                    f"{bound.per_workflow:,}: limits.max_pending_jobs_per_workflow); nothing "
                    "this run did was kept. Try again later")
    if bound.most is not None and sum(counts.values()) > bound.most:
        raise TooManyJobsError(
            f"Too many jobs wait to run (more than {bound.most:,}: limits.max_pending_jobs); "
            "nothing this run did was kept. Try again later")


class Wake:
    """Wakes the workers of this process when jobs were enqueued (on PostgreSQL, a
    notification does the same for every instance)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def _ready(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def set(self) -> None:
        self._ready().set()

    async def wait(self, timeout: float) -> None:
        event = self._ready()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()
