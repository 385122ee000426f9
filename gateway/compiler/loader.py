"""Files to a `Registry`, or every problem in them: source, then schema, then compiler.

A document with schema problems still goes to the compiler, as far as it can
(`schema.well_formed`): its broken steps passed by, its other broken keys taken out, so
that its other problems are reported with the schema's rather than after they are fixed.
A document left out whole (for a YAML problem, or a schema problem in what the checks need
whole) is still known by its kind and name, so that what refers to it is not reported again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from gateway.actions import ACTIONS
from gateway.compiler import Compiler
from gateway.config import schema
from gateway.config.source import Document, Named, declared, load_file
from gateway.core.errors import ConfigError, Diagnostic
from gateway.runtime.model import Registry

SUFFIXES = (".yaml", ".yml")


def discover(paths: Iterable[Path]) -> tuple[list[Path], list[Diagnostic]]:
    """The YAML files under each path (folders are searched recursively), in a stable order."""
    files: list[Path] = []
    problems: list[Diagnostic] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Diagnostic(str(path), 1, 1, "file.not-found",
                                       "no such file or folder"))
    seen: set[Path] = set()
    kept = []
    for file in files:  # a file named twice (or inside a folder also named) is read once
        if file.resolve() not in seen:
            seen.add(file.resolve())
            kept.append(file)
    return kept, problems


def check(paths: Sequence[Path], *, codegen: bool = True) -> tuple[Registry, list[Diagnostic]]:
    """Load and compile; the registry is only meaningful when no diagnostic came back."""
    files, problems = discover(paths)
    documents: list[Document] = []
    broken: list[Named] = []  # documents left out: what refers to them is not "unknown"
    for file in files:
        docs, diagnostics, dropped = load_file(file)
        problems.extend(diagnostics)
        broken.extend(dropped)
        for doc in docs:
            old = old_forms(doc)
            found = [d for d in schema.check(doc) if not _explained(d, old)]
            problems.extend(old + found)
            # The rest of a document with a problem is still checked, when it can be.
            kept = doc if not (found or old) else schema.well_formed(
                doc, frozenset(o.pointer.rsplit("/", 1)[0] for o in old))
            if kept is not None:
                documents.append(kept)
            elif (named := declared(doc.data)) is not None:
                broken.append(named)
    # In one order whatever the order of the paths: which of two documents of one name is
    # the duplicate does not depend on how the files were named.
    documents.sort(key=lambda doc: (Path(doc.file).parts, doc.index))
    compiler = Compiler(documents, codegen=codegen, broken=broken)
    registry = compiler.compile()
    problems.extend(compiler.diagnostics)
    return registry, sorted(set(problems))


def old_forms(doc: Document) -> list[Diagnostic]:
    """The steps written in a form their action no longer takes (its `old_form`), each key
    said once with what to write instead (`step.renamed-key`)."""
    steps = doc.data.get("steps") if isinstance(doc.data, dict) else None
    found = []
    for index, step in enumerate(steps if isinstance(steps, list) else []):
        name = step.get("action") if isinstance(step, dict) else None
        action = ACTIONS.get(name) if isinstance(name, str) else None
        if action is None or action.old_form is None:
            continue
        for key, message in action.old_form(step):
            found.append(doc.diagnostic(f"/steps/{index}/{key}", "step.renamed-key", message,
                                        key=True))
    return found


def _explained(problem: Diagnostic, old: Sequence[Diagnostic]) -> bool:
    """A schema problem that an old form's diagnostic already says: at its key, or a key
    missing from its step."""
    return any(problem.pointer == o.pointer or (problem.code == "schema.required"
                                                and problem.pointer == o.pointer.rsplit("/", 1)[0])
               for o in old)


def errors(problems: Sequence[Diagnostic]) -> list[Diagnostic]:
    """The problems that stop a config from loading (warnings do not)."""
    return [p for p in problems if p.severity == "error"]


def load(paths: Sequence[Path]) -> Registry:
    """A registry ready to serve (warnings aside); raises `ConfigError` with every problem
    when there is an error among them."""
    registry, problems = check(paths)
    if errors(problems):
        raise ConfigError(problems)
    return registry


def config_version(files: Iterable[str]) -> str:
    """The version of a config: a hash of its files' names and contents (12 hex digits)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0")
        try:
            digest.update(Path(name).read_bytes())
        except OSError:
            digest.update(b"\1unreadable")
        digest.update(b"\0")
    return digest.hexdigest()[:12]
