"""What a workflow may answer besides the gateway's own errors: the statuses and content
types its steps (and the custom events it calls) set, read from the documents, for the
OpenAPI description. A step that sets `status`, `text` or `content_type` answers with it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from gateway.config.source import Document, DocumentKind
from gateway.runtime.model import ReplyShape
from gateway.templates import templating

if TYPE_CHECKING:
    from gateway.compiler import Compiler
    from gateway.compiler.units import Unit

TEXT = "text/plain"


def reply_shapes(c: Compiler, unit: Unit) -> tuple[ReplyShape, ...]:
    found: set[ReplyShape] = set()
    for doc in _documents(c, unit):
        for index, step in enumerate(doc.data.get("steps", [])):
            if f"/steps/{index}" in doc.broken:
                continue
            shape = _shape(step)
            if shape is not None:
                found.add(shape)
    return tuple(sorted(found, key=lambda s: (s.status or 0, s.content_type or "")))


def _documents(c: Compiler, unit: Unit) -> Iterable[Document]:
    """The unit's document, and those of every custom event it may call, at any depth."""
    seen = {unit.doc.data.get("name")}
    todo = [unit]
    while todo:
        current = todo.pop()
        yield current.doc
        for event, _ in current.calls:
            called = c.units.get((DocumentKind.CUSTOM_EVENT, event))
            if called is not None and event not in seen:
                seen.add(event)
                todo.append(called)


def _shape(step: Mapping[str, Any]) -> ReplyShape | None:
    if step.get("action") == "return_redirect":
        return ReplyShape(302, None)
    if not any(key in step for key in ("status", "text", "content_type")):
        return None
    status = step.get("status", 200)  # a step answering text or a content type: 200
    if isinstance(status, str) and templating.is_template(status):
        status = None
    content = step.get("content_type")
    if isinstance(content, str) and templating.is_template(content):
        content = "*/*"
    if content is None and "text" in step:
        content = TEXT
    return ReplyShape(status if isinstance(status, int) else None,
                      content.split(";")[0].strip().lower() if content else None)
