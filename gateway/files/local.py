"""A file store in a local folder: `<folder>/<first two digits of the id>/<id>` holds the
bytes and `<id>.json` the description, each written to a temporary file first and renamed
into place, so a reader never sees half a file."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import IO

from gateway.files.store import CHUNK, ID, StoredFile


class LocalFileStore:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _bytes(self, id: str) -> Path:
        if ID.fullmatch(id) is None:  # never a path a caller wrote
            raise ValueError(f"not a file id: {id!r}")
        return self.folder / id[:2] / id

    def _write(self, target: Path, source: IO[bytes]) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(handle, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    async def put(self, file: StoredFile, source: IO[bytes]) -> None:
        def put() -> None:
            source.seek(0)
            path = self._bytes(file.id)
            self._write(path, source)
            self._write(path.with_suffix(".json"), io.BytesIO(file.to_json()))

        await asyncio.to_thread(put)

    async def describe(self, id: str) -> StoredFile | None:
        if ID.fullmatch(id) is None:
            return None
        try:
            data = await asyncio.to_thread(self._bytes(id).with_suffix(".json").read_bytes)
        except FileNotFoundError:
            return None
        return StoredFile.from_json(data)

    async def redescribe(self, file: StoredFile) -> None:
        path = self._bytes(file.id).with_suffix(".json")
        await asyncio.to_thread(self._write, path, io.BytesIO(file.to_json()))

    async def read(self, id: str) -> AsyncGenerator[bytes, None]:
        stream = await asyncio.to_thread(open, self._bytes(id), "rb")
        try:
            while chunk := await asyncio.to_thread(stream.read, CHUNK):
                yield chunk
        finally:
            stream.close()

    async def delete(self, id: str) -> None:
        def delete() -> None:
            path = self._bytes(id)
            for target in (path.with_suffix(".json"), path):  # the description first
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()

        await asyncio.to_thread(delete)

    async def ids(self) -> AsyncIterator[str]:
        def listing() -> list[str]:
            if not self.folder.is_dir():
                return []
            return sorted(p.name for p in self.folder.glob("??/*")
                          if ID.fullmatch(p.name) is not None)

        for id in await asyncio.to_thread(listing):
            yield id

    async def close(self) -> None:
        return None

