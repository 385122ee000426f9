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

# The table of layers, by package; a module may import from its own layer and any lower
# number. Inside `storage`, the contract comes first, then what the backends share, then the
# backends, then the facade that picks one.
LAYERS: dict[str, float] = {
    "gateway": 0,
    "gateway.core": 1,
    "gateway.tracing": 1.5,
    "gateway.config": 2, "gateway.templates": 2,
    "gateway.storage.contract": 3.1, "gateway.storage.common": 3.2,
    "gateway.storage.sqlite": 3.3, "gateway.storage.postgresql": 3.3, "gateway.storage": 3.4,
    "gateway.files": 3.5,
    "gateway.runtime": 4,
    "gateway.actions": 5, "gateway.webhooks": 5,
    "gateway.compiler": 6, "gateway.scheduler": 6, "gateway.api": 6,
    "gateway.console": 7,
    "gateway.server": 8,
    "gateway.cli": 9, "gateway.__main__": 9,
}
# Third-party (and driver) packages and the only modules allowed to import them.
CONFINED: dict[str, tuple[str, ...]] = {
    "starlette": ("gateway.api", "gateway.server", "gateway.console"),
    "uvicorn": ("gateway.cli", "gateway.server.protocol"),
    "click": ("gateway.cli",),
    "psycopg": ("gateway.storage.postgresql",),
    "psycopg_pool": ("gateway.storage.postgresql",),
    "sqlite3": ("gateway.storage.sqlite",),
    "argon2": ("gateway.runtime.accounts",),
    "httpx": ("gateway.runtime.http_client", "gateway.runtime.services",
              "gateway.runtime.context", "gateway.actions"),
    "httpcore": ("gateway.runtime.http_client",),
    "aiosmtplib": ("gateway.runtime.services",),
    "prometheus_client": ("gateway.server.metrics",),
    "watchfiles": ("gateway.server.reload",),
    "boto3": ("gateway.files.s3",),
    "botocore": ("gateway.files.s3",),
    "PIL": ("gateway.files.keeping",),
    "opentelemetry": ("gateway.tracing.otel",),
}
# A newcomer reads the architecture from the tree: packages, and few modules beside them.
MOST_TOP_LEVEL_MODULES = 12


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


def layer_of(module: str) -> float:
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
    # `from gateway.api import auth` imports the module gateway.api.auth, not the package.
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


# The only imports made inside functions, each for a reason other than a cycle (the cycle
# test sees them too): what a process loads at its first use of a feature and not before.
DEFERRED = {
    # httpx and its pool, some 4 MiB, loaded by a process's first call out
    ("gateway.runtime.services", "gateway.runtime.http_client"),
    ("gateway.actions.http_request", "httpx"),
    ("gateway.actions.geocoding", "httpx"),
    # Pillow, loaded by a process's first upload; boto3, only where files go to a bucket
    ("gateway.files.service", "gateway.files.keeping"),
    ("gateway.files.service", "gateway.files.s3"),
    # the OpenTelemetry SDK (the `otel` extra), only when tracing is on
    ("gateway.tracing", "gateway.tracing.otel"),
}


@pytest.mark.parametrize(("module", "path"), ALL, ids=IDS)
def test_no_imports_inside_functions(module: str, path: Path) -> None:
    inside = [f"line {i.line}: {i.target}" for i in imports_of(module, path)
              if i.in_function and (module, i.target) not in DEFERRED]
    assert not inside, f"{module} imports inside functions: {inside}"


def test_deferred_imports_are_still_made_inside_functions() -> None:
    made = {(name, i.target) for name, path in ALL for i in imports_of(name, path)
            if i.in_function}
    assert DEFERRED <= made, f"no longer deferred, drop from DEFERRED: {DEFERRED - made}"


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


def package_of(module: str) -> str:
    """The package a module belongs to: its longest entry in the layer table."""
    parts = module.split(".")
    return next(".".join(parts[:end]) for end in range(len(parts), 0, -1)
                if ".".join(parts[:end]) in LAYERS)


def test_every_module_belongs_to_a_package() -> None:
    loose = [name for name, path in ALL
             if name.count(".") == 1 and path.name != "__init__.py"]
    assert len(loose) <= MOST_TOP_LEVEL_MODULES, f"modules directly in gateway/: {loose}"
    for name, _ in ALL:
        assert package_of(name) != "gateway" or name in ("gateway", "gateway.__main__"), name


def test_no_module_name_repeats_across_packages() -> None:
    """A name says what a module holds, once: only the storage roles repeat, by design, as
    the contract's protocol and each backend's implementation of it."""
    by_name: dict[str, set[str]] = {}
    for name, path in ALL:
        if path.name != "__init__.py":
            by_name.setdefault(path.stem, set()).add(package_of(name))
    storage = {"gateway.storage.contract", "gateway.storage.sqlite", "gateway.storage.postgresql"}
    repeated = {stem: sorted(packages) for stem, packages in by_name.items()
                if len(packages) > 1 and not packages <= storage}
    assert repeated == {}


def test_packages_import_one_way() -> None:
    """No two packages import each other, directly or around a loop, type-only imports
    included: the layering of modules could hide a loop between packages of one layer."""
    graph: dict[str, set[str]] = {}
    for name, path in ALL:
        own = package_of(name)
        graph.setdefault(own, set()).update(
            package_of(i.target) for i in imports_of(name, path)
            if i.target.startswith("gateway.") and package_of(i.target) != own)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("package cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The walk itself can fail: a layer-2 module importing the HTTP layer is caught."""
    bad = tmp_path / "templating.py"
    bad.write_text("from gateway.api import auth\nimport click\n\ndef f():\n    import json\n")
    found = imports_of("gateway.templates.templating", bad)
    assert [(i.target, i.in_function) for i in found] == [
        ("gateway.api.auth", False), ("click", False), ("json", True)]
    assert layer_of("gateway.api.auth") > layer_of("gateway.templates.templating")


def test_the_postgresql_driver_loads_only_when_used() -> None:
    code = ("import sys, gateway.cli, gateway.server.app\n"
            "from gateway.storage import open_storage\n"
            "open_storage('sqlite:///unused.db')\n"
            "print(sorted(m for m in ('psycopg', 'psycopg_pool') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent, timeout=60)
    assert out.stdout.strip() == "[]"
