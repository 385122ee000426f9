"""RFC 6901 JSON pointers: the one way a place inside a document is named."""

from __future__ import annotations

from collections.abc import Iterable


def escape(token: str | int) -> str:
    """Escape one reference token (`~` and `/`)."""
    return str(token).replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def join(base: str, *tokens: str | int) -> str:
    """`join("/steps", 0, "id")` is `/steps/0/id`."""
    return base + "".join("/" + escape(t) for t in tokens)


def from_path(path: Iterable[str | int]) -> str:
    """A pointer from a sequence of keys and indexes (as jsonschema gives them)."""
    return join("", *path)


def split(pointer: str) -> list[str]:
    if not pointer:
        return []
    return [unescape(t) for t in pointer[1:].split("/")]


def parent(pointer: str) -> str:
    return pointer.rsplit("/", 1)[0] if pointer else ""
