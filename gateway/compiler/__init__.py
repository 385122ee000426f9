"""From schema-valid documents (or what is well formed of them: a document's `broken`
steps are passed by) to the compiled model, with the semantic checks.

The schema says what each document may look like; the compiler checks what only the whole
config can tell: names that must exist (parameters, earlier steps, custom events, data types
and their fields, secrets), templates that must parse, custom events that must not call each
other in a loop, and return values that must match what an event declares. Every problem is
a located `Diagnostic`; compilation goes on after one, so that all are reported at once.

It runs in passes, one module each: `kinds` (the table of document kinds, in the order they
are declared), `types` (settings, data types, values against types), `units` (workflows and
events: parameters, the calls between events), `steps` (steps, templates and what they
refer to; each action's own check through its declaration), `option_sets` (the sets and
their options, declared before the data types that use them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.compiler.data_types import BUILTIN_TYPES
from gateway.compiler.kinds import KINDS
from gateway.compiler.privacy_rules import builtin_user_privacy
from gateway.compiler.units import Unit, check_cycles
from gateway.config.source import Document
from gateway.core.errors import Diagnostic
from gateway.core.settings import Settings
from gateway.runtime.model import Registry
from gateway.runtime.privacy import Privacy
from gateway.storage.contract import OptionSet, TypeSpec

__all__ = ["Compiler"]


class Compiler:
    """Compiles one config. `codegen=False` checks everything but skips generating code
    for templates (what `gateway validate` needs, several times faster)."""

    def __init__(self, documents: Iterable[Document], *, codegen: bool = True,
                 broken: Iterable[tuple[str, str]] = ()) -> None:
        self.documents = list(documents)
        self.codegen = codegen
        # (kind, name) of documents left out for a YAML or schema problem (a settings
        # document's name is ""): they exist, so a reference to one is not reported again as
        # unknown.
        self.broken = frozenset(broken)
        self.diagnostics: list[Diagnostic] = []
        self.settings = Settings()
        self.option_sets: dict[str, OptionSet] = {}
        self.data_types: dict[str, TypeSpec] = dict(BUILTIN_TYPES)
        self.units: dict[tuple[str, str], Unit] = {}
        self.privacy: dict[str, Privacy] = {"user": builtin_user_privacy()}
        self.data_api: dict[str, str] = {}  # Data API URL name -> exposed data type
        self.shadowed: list[Unit] = []  # units whose name another took: checked all the same

    def error(self, doc: Document, pointer: str, code: str, message: str, *,
              key: bool = False) -> None:
        self.diagnostics.append(doc.diagnostic(pointer, code, message, key=key))

    def warn(self, doc: Document, pointer: str, code: str, message: str) -> None:
        """A problem that may be meant: reported, but it does not stop a config loading."""
        self.diagnostics.append(doc.diagnostic(pointer, code, message, severity="warning"))

    def is_broken(self, kind: str, name: str) -> bool:
        return (kind, name) in self.broken

    def compile(self) -> Registry:
        by_kind: dict[str, list[Document]] = {}
        for doc in self.documents:
            by_kind.setdefault(doc.data.get("kind", ""), []).append(doc)
        for kind in KINDS:
            kind.declare(self, kind.name, by_kind.get(kind.name, []))
        check_cycles(self)
        units: dict[str, dict[str, Any]] = {}
        for kind in KINDS:
            units[kind.name] = dict(kind.build(self, kind.name, kind.names))
        files = tuple(sorted({doc.file for doc in self.documents}))
        return Registry(units, self.settings, files, self.privacy, self.data_api)
