"""The named SQL blocks: every query a backend module looks up (`Q["name"]`) exists in that
backend's `queries.sql`. Read from the source with `ast`, so that a name only used on a rare
path (an error, a migration) is checked as surely as one every test runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gateway.storage.common.sql_files import queries

STORAGE = Path(__file__).resolve().parents[2] / "gateway" / "storage"
DYNAMIC = "<not a literal name>"


def _loaded_backend(node: ast.AST) -> str | None:
    """The backend of a `Q = queries("backend")` statement, else None."""
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "Q"):
        return None
    call = node.value
    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            and call.func.id == "queries" and len(call.args) == 1
            and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
        return call.args[0].value
    return None


def _looked_up(node: ast.AST) -> str | None:
    """The name of a `Q["name"]` lookup (`DYNAMIC` when it is not a literal), else None."""
    if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
            and node.value.id == "Q"):
        return None
    key = node.slice
    return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else DYNAMIC


def query_names(source: str) -> tuple[str | None, set[str]]:
    """(the backend whose queries a module loads as `Q`, the names it looks up in `Q`)."""
    backend: str | None = None
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        backend = _loaded_backend(node) or backend
        name = _looked_up(node)
        if name is not None:
            names.add(name)
    return backend, names


def missing_queries(source: str) -> list[str]:
    """The names a module looks up that its backend's `queries.sql` does not define."""
    backend, names = query_names(source)
    assert backend is not None or not names, "Q[...] used without Q = queries(...)"
    defined = queries(backend) if backend else {}
    return sorted(name for name in names if name not in defined)


MODULES = sorted(p for p in STORAGE.rglob("*.py") if query_names(p.read_text())[1])


def test_every_backend_has_modules_that_name_queries() -> None:
    backends = {query_names(p.read_text())[0] for p in MODULES}
    assert backends == {"sqlite", "postgresql"}
    assert {"sqlite/record_store.py", "postgresql/record_store.py", "sqlite/run_log.py",
            "postgresql/run_log.py"} <= {p.relative_to(STORAGE).as_posix() for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=[p.relative_to(STORAGE).as_posix() for p in MODULES])
def test_every_query_a_module_names_exists(path: Path) -> None:
    assert missing_queries(path.read_text()) == [], f"{path.name} names undefined queries"


def test_the_check_catches_a_made_up_name() -> None:
    source = ('Q = queries("postgresql")\n'
              'def f(conn):\n'
              '    conn.execute(Q["get_record"])\n'
              '    conn.execute(Q["get_recrod"])\n'
              '    conn.execute(Q[name])\n')
    assert missing_queries(source) == [DYNAMIC, "get_recrod"]
    assert missing_queries(source.replace("postgresql", "sqlite")) == [DYNAMIC, "get_recrod"]
