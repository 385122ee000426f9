"""The SQLite writer writes the run log in statements of a few fixed sizes, so the SQL texts
it prepares (and the connection keeps) stay few, whatever the batches' lengths."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.storage import open_storage
from gateway.storage.sqlite.run_writer import STATEMENT_SIZES, _in_fixed_sizes


@pytest.mark.parametrize("count", [0, 1, 3, 4, 5, 17, 255, 256, 257, 499, 500, 1000])
def test_rows_split_into_fixed_sizes_in_order(count: int) -> None:
    rows = [(str(n), "w", "success", "t", "{}") for n in range(count)]
    parts = _in_fixed_sizes(rows)
    assert [row for part in parts for row in part] == rows
    assert all(len(part) in STATEMENT_SIZES for part in parts)


async def test_batches_of_every_length_use_a_few_statements(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'g.db'}")
    await storage.open()
    try:
        written = 0
        for batch in range(1, 120):
            for n in range(batch):
                storage.runs.record_run({"id": f"{batch}-{n}", "workflow": "w",
                                         "status": "success",
                                         "started_at": datetime(2026, 1, 1, tzinfo=UTC)})
            await storage.runs.flush_runs()
            written += batch
        found = await storage.runs.list_runs(limit=written + 10)
        statements = storage.connector.writer.log._upsert_by_count  # type: ignore[attr-defined]
    finally:
        await storage.close()
    assert len(found) == written
    assert set(statements) <= set(STATEMENT_SIZES)
