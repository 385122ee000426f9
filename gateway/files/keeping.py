"""From what a caller sends to a kept file: a file part of a multipart body, or Bubble's
object form (`{filename, contents: base64, private}`), spooled to a temporary file (never
held whole in memory), measured against `limits.max_file_bytes`, an image checked as an
image, then put in the store under a new random id.

An image is read by Pillow as far as its header and its structure (`verify`), never
decoded: a picture that declares more than `limits.max_image_pixels` (a decompression
bomb) is refused before any pixel is read. Its content type is the one its bytes show,
whatever the caller declared. A file's is the one its name suggests; it is served as an
attachment, never shown by a browser as a page.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import mimetypes
import re
import secrets
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from PIL import Image

from gateway.core.errors import PayloadTooLargeError, ValidationError, shown
from gateway.files.store import CHUNK, FileStore, StoredFile
from gateway.files.uploads import Upload

SPOOL_BYTES = 1_048_576  # a temporary file stays in memory up to this size
IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif",
                 "WEBP": "image/webp"}  # never SVG: it can carry script
_BASE64_PREFIX = ";base64,"
_SPACE = re.compile(r"\s")  # anywhere in the text: a chunk is decoded with validate=True


def _spool(upload: Upload, most: int) -> IO[bytes]:
    """The upload's bytes in a temporary file, measured as they are written."""
    spooled: IO[bytes] = tempfile.SpooledTemporaryFile(SPOOL_BYTES)  # noqa: SIM115
    try:
        size = 0
        for chunk in _chunks(upload):
            size += len(chunk)
            if size > most:
                raise PayloadTooLargeError(
                    f"the file {shown(upload.name)!r} is larger than {most} bytes "
                    "(limits.max_file_bytes)")
            spooled.write(chunk)
        spooled.seek(0)
        return spooled
    except BaseException:
        spooled.close()
        raise


def _chunks(upload: Upload) -> Any:
    if upload.file is not None:
        upload.file.seek(0)
        while chunk := upload.file.read(CHUNK):
            yield chunk
        return
    text = upload.base64 or ""
    if text.startswith("data:") and _BASE64_PREFIX in text[:200]:
        text = text[text.index(_BASE64_PREFIX) + len(_BASE64_PREFIX):]
    step = CHUNK // 3 * 4  # a whole number of base64 quanta
    if _SPACE.search(text) is not None or len(text) % 4:
        text = "".join(text.split())  # wrapped lines (a rare form): decoded in one go
    try:
        for start in range(0, len(text), step):
            yield base64.b64decode(text[start:start + step], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"the contents of the file {shown(upload.name)!r} are not "
                              "valid base64") from exc


def _image_type(spooled: IO[bytes], name: str, most_pixels: int) -> str:
    """The content type of an image's bytes; `ValidationError` for anything else."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(spooled, formats=list(IMAGE_FORMATS)) as image:
                width, height = image.size
                if width * height > most_pixels:
                    raise ValidationError(
                        f"the image {shown(name)!r} is {width}×{height} pixels, more than "
                        f"{most_pixels} (limits.max_image_pixels)")
                kind = IMAGE_FORMATS[str(image.format)]
                image.verify()
    except ValidationError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on hostile bytes
        raise ValidationError(f"the file {shown(name)!r} is not an image (PNG, JPEG, GIF "
                              "or WebP)") from exc
    finally:
        spooled.seek(0)
    return kind


def _file_type(name: str, allowed: tuple[str, ...]) -> str:
    kind = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
    if allowed and kind not in allowed:
        raise ValidationError(f"files of type {kind} are not accepted (files.allowed_types "
                              f"lists {', '.join(allowed)})")
    return kind


@dataclass(frozen=True, slots=True)
class Rules:
    """What a kept file may be: `limits.max_file_bytes`, `limits.max_image_pixels` and
    `files.allowed_types`."""

    max_bytes: int
    max_pixels: int
    allowed_types: tuple[str, ...] = ()


async def keep(store: FileStore, upload: Upload, *, image: bool, private: bool,
               rules: Rules, now: datetime,
               holder: tuple[str, str] | None = None) -> StoredFile:
    """Check `upload` and put it in `store`."""
    def checked() -> tuple[IO[bytes], str, int]:
        spooled = _spool(upload, rules.max_bytes)
        try:
            size = spooled.seek(0, 2)
            spooled.seek(0)
            kind = (_image_type(spooled, upload.name, rules.max_pixels) if image
                    else _file_type(upload.name, rules.allowed_types))
        except BaseException:
            spooled.close()
            raise
        return spooled, kind, size

    spooled, kind, size = await asyncio.to_thread(checked)
    try:
        file = StoredFile(secrets.token_hex(16), upload.name, kind, size,
                          private or upload.private, image, now.isoformat(),
                          (holder,) if holder is not None else ())
        await store.put(file, spooled)
    finally:
        spooled.close()
    return file
