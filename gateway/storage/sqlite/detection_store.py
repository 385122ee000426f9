"""Detection windows on SQLite: `DetectionStore` over a `SqliteConnector`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.core.encoding import iso, parse_iso
from gateway.storage.common.sql_files import queries
from gateway.storage.contract.detection_store import Detection
from gateway.storage.sqlite.connector import SqliteConnector

Q = queries("sqlite")


class SqliteDetections:
    """`DetectionStore` on one SQLite file."""

    def __init__(self, connector: SqliteConnector) -> None:
        self._db = connector

    async def open_detection(self, name: str, until: datetime, headers: bool,
                             at: datetime) -> None:
        row = (name, iso(at), iso(until), int(headers))
        await self._db.write(lambda conn: conn.execute(Q["open_detection"], row))

    async def find_detection(self, name: str) -> Detection | None:
        rows = await self._db.fetch(Q["find_detection"], (name,))
        return _detection(rows[0]) if rows else None

    async def take_sample(self, name: str, sample: str, at: datetime) -> bool:
        row = (name, sample, iso(at))
        taken = await self._db.write(lambda conn: conn.execute(Q["take_sample"], row).rowcount)
        return bool(taken)


def _detection(row: Any) -> Detection:
    return Detection(row[0], parse_iso(row[1]), parse_iso(row[2]), bool(row[3]), row[4],
                     parse_iso(row[5]) if row[5] else None)
