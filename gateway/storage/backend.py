"""What both backends share, above their connections and their SQL.

A backend owns how it connects and the SQL it sends; the rest is decided here, once: which
data types and indexes a store serves and how a stored row reads as a record (`Catalog`),
how a unique violation becomes a `DuplicateError`, which indexes to drop and create, which
migrations are pending, how recorded runs wait to be written in batches (`RunQueue`), and
the idempotency keys a process remembers (`KeyMemory`).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from gateway.errors import DuplicateError, RecordNotFoundError, StorageError
from gateway.storage import codec, limits
from gateway.storage.interface import Change, Claim, TypeSpec
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
# The idempotency keys one process remembers at most (claims and answers), and the bytes of
# the answers' bodies among them; past either, the oldest answers already in the database
# are forgotten first (a key forgotten is read from the database again).
MEMORY_KEYS = 100_000
MEMORY_BYTES = 64 * 1024 * 1024
# The most keys a process notes as held by the database and not by its memory (a 64-bit
# prefix each, about 70 bytes); past it, any key memory lacks is looked up until the ones
# noted have expired.
STORED_KEYS = 1_000_000
RUNNING = Claim("running")

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
        self.types = {spec.name: spec for spec in types}
        defs = [d for spec in types for d in index_definitions(dialect, spec)]
        self.indexes = {d.name: d for d in defs}
        return defs

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
        self._warned_at = -WARN_SECONDS

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: R) -> bool:
        """Queue one run; True when this run completes a batch (time to write)."""
        if len(self._rows) >= self.limit:
            self.drop(1, "the queue of runs to write is full")
            return False
        self._rows.append(row)
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


@dataclass(slots=True)
class HeldKey:
    """An idempotency key as a process knows it: its claim, then its answer."""

    owner: str
    lease_until: datetime
    expires_at: datetime
    answer: Claim | None = None  # the stored answer, once the run finished
    written: int = 0  # the number of the last write of it handed to the database


class KeyMemory:
    """The idempotency keys a process claimed, answered or read, oldest first, bounded by
    `most` keys and `most_bytes` of answers. A key is forgotten only once it is done and its
    last write is in the database (`written` at most `committed`). `stored` notes the keys
    the database may hold and memory does not (a prefix of each: one that matches by chance
    costs a needless read), at most `most_stored`; past that (or before they were loaded) it
    is None, and any key memory lacks may be in the database until `horizon`, the latest
    expiry it may hold."""

    def __init__(self, most: int = MEMORY_KEYS, most_bytes: int = MEMORY_BYTES,
                 most_stored: int = STORED_KEYS) -> None:
        self.keys: collections.OrderedDict[tuple[str, str], HeldKey] = \
            collections.OrderedDict()
        self.most, self.most_bytes = most, most_bytes
        self.bytes = 0
        self.committed = 0
        self.most_stored = most_stored
        self.stored: set[int] | None = None
        self.horizon: datetime | None = None

    def load(self, rows: Sequence[tuple[str, str, datetime]]) -> None:
        """The keys the database holds (`most_stored` + 1 at most, latest expiry first)."""
        self.stored = {_noted(slot[:2]) for slot in rows}
        self.horizon = rows[0][2] if rows else None
        if len(rows) > self.most_stored:
            self.stored = None

    def maybe_stored(self, slot: tuple[str, str], now: datetime) -> bool:
        """Whether the database may hold a key memory lacks (else it is surely free)."""
        if self.stored is not None:
            return _noted(slot) in self.stored
        if self.horizon is not None and self.horizon <= now:
            self.stored = set()  # everything noted has expired: start afresh
            return False
        return True

    @staticmethod
    def decide(held: HeldKey | None, now: datetime) -> Claim | None:
        """What holds the key at `now`: its answer, `RUNNING`, or None (free to claim)."""
        if held is None:
            return None
        if held.answer is not None:
            return held.answer if held.expires_at > now else None
        return RUNNING if held.lease_until > now else None

    def hold(self, slot: tuple[str, str], held: HeldKey) -> None:
        self.drop(slot)
        self.keys[slot] = held
        if held.answer is not None:
            self.bytes += len(held.answer.body)
        if len(self.keys) > self.most or self.bytes > self.most_bytes:
            self._shrink()

    def finish(self, slot: tuple[str, str], owner: str, answer: Claim) -> bool:
        held = self.keys.get(slot)
        if held is None or held.owner != owner or held.answer is not None:
            return False
        held.answer = answer
        self.bytes += len(answer.body)
        self.keys.move_to_end(slot)
        return True

    def drop(self, slot: tuple[str, str], owner: str | None = None) -> bool:
        held = self.keys.get(slot)
        if held is None or (owner is not None and (held.owner != owner or held.answer)):
            return False
        del self.keys[slot]
        if held.answer is not None:
            self.bytes -= len(held.answer.body)
        return True

    def purge(self, now: datetime) -> None:
        for slot in [s for s, held in self.keys.items() if held.expires_at <= now]:
            self.drop(slot)

    def _shrink(self) -> None:
        excess, excess_bytes = len(self.keys) - self.most, self.bytes - self.most_bytes
        gone = []
        for slot, held in self.keys.items():
            if excess <= 0 and excess_bytes <= 0:
                break
            if held.answer is None or held.written > self.committed:
                continue  # running, or not in the database yet
            gone.append(slot)
            excess, excess_bytes = excess - 1, excess_bytes - len(held.answer.body)
            self._forget(slot, held.expires_at)
        for slot in gone:
            self.drop(slot)

    def _forget(self, slot: tuple[str, str], expires_at: datetime) -> None:
        if self.horizon is None or expires_at > self.horizon:
            self.horizon = expires_at
        if self.stored is not None:
            self.stored.add(_noted(slot))
            if len(self.stored) > self.most_stored:
                self.stored = None


def _noted(slot: tuple[str, str]) -> int:
    """A key's note: its 64-bit hash in this process (a collision costs one needless read)."""
    return hash(slot)
