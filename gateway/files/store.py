"""What a file store keeps: the bytes of a file under a random id, and its description
(`StoredFile`) beside them. The ids are the store's own (32 hex digits), so nothing a caller
names can reach outside the store or another file."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import asdict, dataclass, replace
from typing import IO, Any, Protocol
from urllib.parse import quote

ID = re.compile(r"[0-9a-f]{32}")
CHUNK = 65_536  # bytes read or written at once


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A kept file: its id and name (as served), its content type and size in bytes,
    whether it is private (served only through signed URLs) and an image, when it was
    kept (ISO 8601), and the fields (`(data type, field)`) whose records may hold it."""

    id: str
    name: str
    content_type: str
    size: int
    private: bool = False
    image: bool = False
    created: str = ""
    holders: tuple[tuple[str, str], ...] = ()

    def path(self, prefix: str = "") -> str:
        """Where it is served (the value a record keeps): a private file's path says so,
        and answers only with a signature."""
        where = "files/private" if self.private else "files"
        return f"{prefix}/{where}/{self.id}/{quote(self.name, safe='')}"

    def held_by(self, type: str, field: str, private: bool) -> StoredFile:
        """Held by the records of `type`'s `field` too; private from now on if that field
        is (its path changes: the public one no longer answers)."""
        holders = self.holders if (type, field) in self.holders else (
            *self.holders, (type, field))
        return replace(self, holders=holders, private=self.private or private)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> StoredFile:
        raw: dict[str, Any] = json.loads(data)
        raw["holders"] = tuple(tuple(pair) for pair in raw.get("holders", ()))
        return cls(**raw)


class FileStore(Protocol):
    """Bytes and descriptions by id. Every method is safe to await on the event loop: the
    blocking work runs in a thread."""

    async def put(self, file: StoredFile, source: IO[bytes]) -> None:
        """Keep `source`'s bytes (read from its start) and `file`, its description."""

    async def describe(self, id: str) -> StoredFile | None:
        """The description of `id`, or None (no such file, or not an id)."""

    async def redescribe(self, file: StoredFile) -> None:
        """Replace the description of a kept file."""

    def read(self, id: str) -> AsyncGenerator[bytes, None]:
        """The bytes of a kept file, in chunks; `FileNotFoundError` (from the first) when
        they are gone."""

    async def delete(self, id: str) -> None:
        """Forget a file, bytes and description (nothing if it is not there)."""

    def ids(self) -> AsyncIterator[str]:
        """Every kept file's id."""

    async def close(self) -> None: ...
