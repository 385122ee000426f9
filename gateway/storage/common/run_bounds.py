"""What both backends' run logs share to keep the log within its bound: a run's size
sampled, and the rows a trim may remove."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Size-aware retention: how many of the newest runs give the average size of a run, and
# how many runs one delete removes (each its own commit, so writes never wait long).
SIZE_SAMPLE = 1000
TRIM_CHUNK = 1000


def size_per_run(rows: Sequence[Sequence[Any]], overhead: int) -> int:
    """Bytes a run takes: the average size of the sampled documents (the `run_size`
    query's one value, None when there is no run) plus the backend's row overhead."""
    average = rows[0][0] if rows else None
    return int(average) + overhead if average is not None else 0


def row_budget(max_rows: int | None, max_bytes: int | None, run_size: int) -> int | None:
    """How many runs may stay: `max_rows`, and as many as fit `max_bytes` at `run_size`
    bytes each; None when neither applies."""
    budgets = [] if max_rows is None else [max_rows]
    if max_bytes is not None and run_size > 0:
        budgets.append(max_bytes // run_size)
    return min(budgets) if budgets else None
