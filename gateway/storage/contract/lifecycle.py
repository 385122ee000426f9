"""A backend as a whole: its lifecycle, its transactions, and `Storage`, one attribute per
role."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.storage.contract.detection_store import DetectionStore
from gateway.storage.contract.idempotency_store import IdempotencyStore, RateCounter
from gateway.storage.contract.job_store import JobStore
from gateway.storage.contract.key_store import KeyStore
from gateway.storage.contract.record_store import RecordStore
from gateway.storage.contract.run_log import RunLog
from gateway.storage.contract.types import TypeSpec
from gateway.storage.contract.user_store import UserStore


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

    # Which database it is (`sqlite`, `postgresql`), as traces name it (`db.system.name`).
    system: str

    @property
    def records(self) -> RecordStore: ...
    @property
    def runs(self) -> RunLog: ...
    @property
    def keys(self) -> KeyStore: ...
    @property
    def detections(self) -> DetectionStore: ...
    @property
    def users(self) -> UserStore: ...
    @property
    def idempotency(self) -> IdempotencyStore: ...
    @property
    def rates(self) -> RateCounter: ...
    @property
    def jobs(self) -> JobStore: ...
