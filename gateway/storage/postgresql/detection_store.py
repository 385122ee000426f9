"""Detection windows on PostgreSQL: `DetectionStore` over a `PostgresConnector`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.storage.common.sql_files import queries
from gateway.storage.contract.detection_store import Detection
from gateway.storage.postgresql.connector import PostgresConnector

Q = queries("postgresql")


class PostgresDetections:
    """`DetectionStore` on a PostgreSQL database."""

    def __init__(self, connector: PostgresConnector) -> None:
        self._db = connector

    async def open_detection(self, name: str, until: datetime, headers: bool,
                             at: datetime) -> None:
        await self._db.execute(Q["open_detection"], {"name": name, "at": at, "until": until,
                                                     "headers": headers})

    async def find_detection(self, name: str) -> Detection | None:
        rows = await self._db.fetch(Q["find_detection"], (name,))
        return _detection(rows[0]) if rows else None

    async def take_sample(self, name: str, sample: str, at: datetime) -> bool:
        return bool(await self._db.execute(Q["take_sample"], {"name": name, "sample": sample,
                                                              "at": at}))


def _detection(row: Any) -> Detection:
    return Detection(row[0], row[1].astimezone(UTC), row[2].astimezone(UTC), bool(row[3]),
                     row[4], row[5].astimezone(UTC) if row[5] else None)
