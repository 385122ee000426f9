"""The files of one process: its store, the rules uploads are held to, and its signed
links. Made from the settings (`files:` and `limits:`) by `open_files`.

A record keeps a file's path (`<prefix>/files/<id>/<name>`). A private file's path
answers only with a signature: `?expires=<unix seconds>&signature=<HMAC-SHA-256 of the
path and expiry>`, which the Data API adds to every private file it shows, for
`files.link_lifetime`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote, urlsplit

from gateway.core.errors import ValidationError
from gateway.core.settings import Settings
from gateway.files.local import LocalFileStore
from gateway.files.store import FileStore
from gateway.files.uploads import Upload

log = logging.getLogger("gateway.files")
MIN_SECRET = 32  # characters of a `files.secret` worth signing with
_DIGITS = re.compile(r"[0-9]{1,12}")  # an expiry: ASCII digits (`str.isdigit` takes "²")


@dataclass
class Files:
    store: FileStore
    prefix: str
    key: bytes
    lifetime: float  # seconds a signed link lasts
    max_bytes: int
    max_pixels: int
    allowed_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._ours = re.compile(re.escape(self.prefix) +
                                r"/files/(?:private/)?([0-9a-f]{32})/[^/?#]+")

    async def keep(self, upload: Upload, *, image: bool, private: bool, now: datetime,
                   holder: tuple[str, str] | None = None) -> str:
        """Check `upload`, keep it (held by `holder`'s records, if given) and return its
        path."""
        from gateway.files import keeping  # Pillow: loaded at a process's first upload

        rules = keeping.Rules(self.max_bytes, self.max_pixels, self.allowed_types)
        file = await keeping.keep(self.store, upload, image=image, private=private,
                                  rules=rules, now=now, holder=holder)
        return file.path(self.prefix)

    def file_id(self, url: str) -> str | None:
        """The id of one of this gateway's files that `url` points at (its path, with or
        without a signature), or None for any other URL."""
        if not url.startswith("/") or url.startswith("//"):
            return None  # records keep the paths of the gateway's own files
        match = self._ours.fullmatch(urlsplit(url).path)
        return match.group(1) if match else None

    async def hold(self, url: str, type: str, field: str, *, image: bool,
                   private: bool) -> str:
        """`url`, one of this gateway's files, as a field of `type` keeps it (its path,
        without a signature), once the file is known to be held by that field's records
        (and made private, if the field is)."""
        id = self.file_id(url)
        file = None if id is None else await self.store.describe(id)
        if file is None:
            raise ValidationError(f"field {field} of {type}: no file is kept at {url[:200]!r}")
        if image and not file.image:
            raise ValidationError(f"field {field} of {type} takes images, and the file "
                                  f"{file.name[:100]!r} is not one")
        held = file.held_by(type, field, private)
        if held != file:
            await self.store.redescribe(held)
        return held.path(self.prefix)

    def sign(self, path: str, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.lifetime)
        return f"{path}?expires={expires}&signature={self._signature(path, expires)}"

    def signed_ok(self, path: str, expires: str | None, signature: str | None,
                  now: float | None = None) -> bool:
        if not expires or not signature or not _DIGITS.fullmatch(expires):
            return False
        if int(expires) < (time.time() if now is None else now):
            return False
        # As bytes: `compare_digest` raises TypeError on a str that is not ASCII.
        return hmac.compare_digest(self._signature(path, int(expires)).encode(),
                                   signature.encode())

    def _signature(self, path: str, expires: int) -> str:
        digest = hmac.new(self.key, f"{unquote(path)}\n{expires}".encode(),
                          hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    async def close(self) -> None:
        await self.store.close()


def open_files(settings: Settings) -> Files:
    """The files of the settings: their store (an S3-compatible bucket, or a folder) and
    signing key (derived from `files.secret`, or random for this process)."""
    store: FileStore
    s3 = settings.files_s3
    if s3:
        from gateway.files.s3 import S3FileStore  # boto3: loaded only for a bucket

        secrets_ = settings.secrets
        store = S3FileStore(
            s3["bucket"], prefix=s3.get("prefix", ""), endpoint_url=s3.get("endpoint_url"),
            region=s3.get("region"),
            access_key_id=secrets_.get(s3.get("access_key_id_secret") or "") or None,
            secret_access_key=secrets_.get(s3.get("secret_access_key_secret") or "") or None)
    else:
        store = LocalFileStore(settings.files_folder)
    secret = settings.secrets.get(settings.files_secret or "")
    if secret and len(secret) >= MIN_SECRET:
        key = hmac.new(secret.encode(), b"gateway file links", hashlib.sha256).digest()
    else:
        key = secrets.token_bytes(32)
    return Files(store, settings.prefix, key, settings.files_link_lifetime.total_seconds(),
                 settings.max_file_bytes, settings.max_image_pixels,
                 settings.files_allowed_types)
