"""What SQLite's errors mean to the gateway: the file unavailable now (503), or a write
refused; and the messages of the writer's own refusals."""

from __future__ import annotations

import sqlite3

from gateway.core.errors import GatewayError, StorageError, StorageUnavailableError

# SQLite's primary result codes that say the file cannot be used right now (busy or locked
# past the busy timeout, out of memory, read-only, an I/O error, corrupt, full, cannot be
# opened, not a database), rather than that the statement was wrong.
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})
STOPPED = "the database is unavailable: its writer has stopped"
UNAVAILABLE = "the database is unavailable; try again later"
HELD_TOO_LONG = "the run held the database's writer past its time and was rolled back"


def unavailable(exc: BaseException) -> bool:
    """True when `exc` says the file cannot be used now, not that a statement was wrong."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in (
        _UNAVAILABLE_CODES)


def failure(exc: Exception) -> GatewayError:
    """What the jobs of a batch that could not commit are answered with."""
    if isinstance(exc, GatewayError):
        return exc
    error: StorageError = (StorageUnavailableError(UNAVAILABLE)
                           if unavailable(exc) else
                           StorageError(f"the database could not commit: {exc}"))
    error.__cause__ = exc
    return error
