"""The detection role: `Detection` and `DetectionStore`, Bubble's "detect request data" for
a workflow not written yet (see `gateway detect --start`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Detection:
    """A detection window: open for `name` from `opened_at` until `until`, or until its first
    sample arrives (`sample`, the request as JSON, at `sampled_at`). `headers`: the sample
    keeps the request's headers too."""

    name: str
    opened_at: datetime
    until: datetime
    headers: bool = False
    sample: str | None = None
    sampled_at: datetime | None = None

    def open_at(self, now: datetime) -> bool:
        return self.sample is None and now < self.until


class DetectionStore(Protocol):
    """Detection windows by workflow name: one each, opened again from scratch."""

    async def open_detection(self, name: str, until: datetime, headers: bool,
                             at: datetime) -> None: ...
    async def find_detection(self, name: str) -> Detection | None: ...
    # Keeps `sample` if the window is open at `at` and holds none yet: True when it did
    # (of requests racing for one window, exactly one is kept).
    async def take_sample(self, name: str, sample: str, at: datetime) -> bool: ...
