"""What an action gets to work with: the run context, and the reply that ends a run.

Actions import no services: storage, the clock and the way to call a custom event all come
from the `RunContext` the interpreter builds for each run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.storage.interface import Storage, TypeSpec


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a run acts for: `anonymous`, `user` (with `user_id`) or `admin`."""

    kind: str = "anonymous"
    user_id: str | None = None

    @property
    def record(self) -> dict[str, Any]:
        """As the run log keeps it."""
        return {"kind": self.kind, "user_id": self.user_id}


RUN_LOG = logging.getLogger("gateway.run")
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


CallEvent = Callable[["RunContext", str, Mapping[str, Any]], Awaitable[Any]]


@dataclass(slots=True)
class RunContext:
    """The state and services of one run (custom events called inline get their own)."""

    run_id: str
    workflow: str
    now: datetime
    call_event: CallEvent
    storage: Storage | None = None
    data_types: Mapping[str, TypeSpec] = field(default_factory=dict)
    identity: Identity = ANONYMOUS
    ignore_privacy_rules: bool = False
    depth: int = 0
    source: str = "http"
    log: logging.Logger = RUN_LOG
    steps: list[dict[str, Any]] = field(default_factory=list)
