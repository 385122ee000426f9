"""Diagnostics rendered for people (gcc style) or machines (JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from gateway.core.encoding import escape
from gateway.core.errors import Diagnostic


def as_text(diagnostic: Diagnostic) -> str:
    """`file:line:col: error[code]: message (at /pointer)`, one line: a line break or other
    control character in a file's name, a message or a key (a pointer) is escaped."""
    where = f" (at {diagnostic.pointer})" if diagnostic.pointer else ""
    return escape(f"{diagnostic.file}:{diagnostic.line}:{diagnostic.column}: "
                  f"{diagnostic.severity}[{diagnostic.code}]: {diagnostic.message}{where}")


def render_text(diagnostics: Sequence[Diagnostic]) -> str:
    lines = [as_text(d) for d in sorted(diagnostics)]
    files = len({d.file for d in diagnostics})
    lines.append(f"{len(diagnostics)} problem(s) in {files} file(s)" if diagnostics else "ok")
    return "\n".join(lines)


def render_json(diagnostics: Sequence[Diagnostic], files_checked: int | None = None) -> str:
    payload: dict[str, object] = {
        "ok": not any(d.severity == "error" for d in diagnostics),
        "diagnostics": [d.as_dict() for d in sorted(diagnostics)],
    }
    if files_checked is not None:
        payload["files"] = files_checked
    return json.dumps(payload, indent=2)
