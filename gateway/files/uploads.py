"""A file a caller sent, before it is kept: what coercion makes of a file value that is not
a URL (see `gateway.files.keeping` for what it goes through next)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import IO, Any

from gateway.core.errors import shown

MAX_NAME = 200  # characters of a file name kept


@dataclass(frozen=True, slots=True)
class Upload:
    """A file a caller sent and that is not kept yet: base64 text (Bubble's object form)
    or an open file (a multipart part)."""

    name: str
    content_type: str | None = None
    private: bool = False
    base64: str | None = None
    file: IO[bytes] | None = None

    def __repr__(self) -> str:  # what a run log or an error shows: never the contents
        return f"<upload {shown(self.name, 100)!r}>"


def from_object(value: dict[str, Any]) -> Upload:
    """Bubble's object form of a file: `filename`, base64 `contents`, and `private`."""
    name, contents = value.get("filename"), value.get("contents")
    private = value.get("private", False)
    if not isinstance(name, str) or not isinstance(contents, str) or not isinstance(
            private, bool):
        raise ValueError("a file is {filename: text, contents: base64 text, private: "
                         "true or false}")
    return Upload(safe_name(name), None, private, base64=contents)


def without_contents(value: Any) -> Any:
    """`value` as a run log shows it: an upload as its name, and a file in Bubble's object
    form with the length of its `contents` in their place (alone or in a list), never the
    contents themselves."""
    if isinstance(value, Upload):
        return repr(value)
    if isinstance(value, list):
        return [without_contents(item) for item in value]
    if isinstance(value, dict) and isinstance(value.get("contents"), str):
        return {**value, "contents": f"<{len(value['contents'])} characters>"}
    return value


def safe_name(name: str) -> str:
    """A file name fit to serve: its last path segment, without control characters or
    leading dots, at most `MAX_NAME` characters, never empty."""
    name = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join(c for c in name if c.isprintable()).strip().lstrip(".")
    return name[-MAX_NAME:] or "file"


# Characters of a URL a file value may be: room for a kept file's own signed path, whose name
# alone may quote to 12 characters a character (`MAX_NAME` of them, each 4 UTF-8 bytes).
MAX_URL = 4096


def file_value(value: Any) -> Any:
    """A `file` or `image` value as a caller sends it: a URL (kept as it is; one of the
    gateway's own is checked when a record takes it), Bubble's object form, or a file part
    of a multipart body (already an `Upload`)."""
    if isinstance(value, Upload):
        return value
    if isinstance(value, dict):
        return from_object(value)
    if not isinstance(value, str):
        raise ValueError("not a file")
    url = value.strip()
    if len(url) > MAX_URL or not url.isprintable() or " " in url:
        raise ValueError("not a URL")
    if not url.startswith(("https://", "http://", "//", "/")):
        raise ValueError("not a URL (http, https, // or a path)")
    return url
