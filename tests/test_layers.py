"""The layering of `gateway/`: each module imports only from its own layer and the layers
above it; web, server, CLI and database libraries stay in their modules; no imports inside
functions. Read from the source with `ast`, so that it holds for every module, imported or not.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gateway"

# The table of layers; a module may import from its own layer and any lower number.
LAYERS: dict[str, int] = {
    "gateway": 0,
    "gateway.core": 1,
    "gateway.config": 2, "gateway.templates": 2,
    "gateway.forwarded": 2, "gateway.throttle": 2,
    "gateway.model": 3, "gateway.storage": 3, "gateway.coercion": 3,
    "gateway.context": 3, "gateway.action": 3, "gateway.param": 3, "gateway.accounts": 3,
    "gateway.privacy": 3, "gateway.signature": 3, "gateway.services": 3, "gateway.detect": 3,
    "gateway.compiler": 4, "gateway.actions": 4,
    "gateway.loader": 5, "gateway.interpreter": 5,
    "gateway.scheduler": 6, "gateway.auth": 6, "gateway.envelope": 6, "gateway.hooks": 6,
    "gateway.openapi": 6, "gateway.metrics": 6, "gateway.objects": 6,
    "gateway.data_openapi": 6, "gateway.retention": 6,
    "gateway.http": 7, "gateway.data_api": 7, "gateway.console": 7,
    "gateway.app": 8, "gateway.testrun": 8,
    "gateway.reload": 8,
    "gateway.cli": 9, "gateway.server": 9, "gateway.__main__": 9,
}
# Third-party (and driver) packages and the only modules allowed to import them.
CONFINED: dict[str, tuple[str, ...]] = {
    "starlette": ("gateway.http", "gateway.data_api", "gateway.auth", "gateway.app",
                  "gateway.testrun", "gateway.console"),
    "uvicorn": ("gateway.cli", "gateway.server"),
    "click": ("gateway.cli",),
    "psycopg": ("gateway.storage",),
    "psycopg_pool": ("gateway.storage",),
    "sqlite3": ("gateway.storage",),
    "argon2": ("gateway.accounts",),
    "httpx": ("gateway.services", "gateway.context", "gateway.actions"),
    "httpcore": ("gateway.services",),
    "aiosmtplib": ("gateway.services",),
    "prometheus_client": ("gateway.metrics",),
    "watchfiles": ("gateway.reload",),
}


@dataclass(frozen=True, slots=True)
class Import:
    target: str
    line: int
    type_only: bool
    in_function: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> list[tuple[str, Path]]:
    return sorted((module_name(p), p) for p in PACKAGE.rglob("*.py"))


def layer_of(module: str) -> int:
    """The layer of a module: its own entry, else its package's (`gateway.storage.common`)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in LAYERS:
            return LAYERS[name]
    raise AssertionError(f"{module} has no layer in the table")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([node.module] if node.module else []))
    # `from gateway import http` imports the module gateway.http, not the package.
    return [f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base
            for alias in node.names]


def imports_of(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []

    def visit(node: ast.AST, type_only: bool, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend(Import(a.name, child.lineno, type_only, in_function)
                             for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                found.extend(Import(t, child.lineno, type_only, in_function)
                             for t in _absolute(module, path.name == "__init__.py", child))
            elif isinstance(child, ast.If) and _is_type_checking(child):
                visit(child, True, in_function)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, type_only, True)
            else:
                visit(child, type_only, in_function)

    visit(tree, False, False)
    return found


ALL = modules()
IDS = [name for name, _ in ALL]


def test_every_module_has_a_layer() -> None:
    assert len(ALL) > 20
    for name, _ in ALL:
        if name != "gateway":
            assert layer_of(name) > 0, f"{name} has no layer of its own in the table"


@pytest.mark.parametrize(("module", "path"), ALL, ids=IDS)
def test_imports_go_only_upwards(module: str, path: Path) -> None:
    own = layer_of(module)
    wrong = [f"line {i.line}: {i.target} (layer {layer_of(i.target)})"
             for i in imports_of(module, path)
             if i.target.split(".")[0] == "gateway"
             and i.target != module and layer_of(i.target) > own]
    # Type-only imports count too: a type from a lower layer is a dependency all the same.
    assert not wrong, f"{module} (layer {own}) imports from lower layers: {wrong}"


@pytest.mark.parametrize(("module", "path"), ALL, ids=IDS)
def test_libraries_stay_in_their_modules(module: str, path: Path) -> None:
    wrong = []
    for item in imports_of(module, path):
        allowed = CONFINED.get(item.target.split(".")[0])
        if allowed is not None and not any(module == a or module.startswith(a + ".")
                                           for a in allowed):
            wrong.append(f"line {item.line}: {item.target}")
    assert not wrong, f"{module} imports libraries confined elsewhere: {wrong}"


@pytest.mark.parametrize(("module", "path"), ALL, ids=IDS)
def test_no_imports_inside_functions(module: str, path: Path) -> None:
    inside = [f"line {i.line}: {i.target}" for i in imports_of(module, path) if i.in_function]
    assert not inside, f"{module} imports inside functions: {inside}"


def test_the_import_graph_has_no_cycles() -> None:
    graph = {name: {i.target for i in imports_of(name, path)
                    if i.target.startswith("gateway") and not i.type_only and i.target != name
                    and i.target in dict(ALL)}
             for name, path in ALL}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The walk itself can fail: a layer-2 module importing the HTTP layer is caught."""
    bad = tmp_path / "templating.py"
    bad.write_text("from gateway import http\nimport click\n\ndef f():\n    import json\n")
    found = imports_of("gateway.templates.templating", bad)
    assert [(i.target, i.in_function) for i in found] == [
        ("gateway.http", False), ("click", False), ("json", True)]
    assert layer_of("gateway.http") > layer_of("gateway.templates.templating")


def test_the_postgresql_driver_loads_only_when_used() -> None:
    code = ("import sys, gateway.cli, gateway.app\n"
            "from gateway.storage import open_storage\n"
            "open_storage('sqlite:///unused.db')\n"
            "print(sorted(m for m in ('psycopg', 'psycopg_pool') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent, timeout=60)
    assert out.stdout.strip() == "[]"
