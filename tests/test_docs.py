"""The documentation site builds in strict mode, and its reference names everything the code
has: every action, schema key, setting, environment variable, fixed limit, command, error
code and diagnostic code, each looked for in the built HTML from the code's own tables."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import pytest

from gateway.actions import ACTIONS
from gateway.cli import main
from gateway.config.diagnostics import CATALOG
from gateway.config.schema import CODES, schema_document
from gateway.core import errors
from gateway.core.settings import ENVIRONMENT, Settings, from_document

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = "settings"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference",
                                                  ROOT / "docs" / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _generator()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for the module with `mkdocs build --strict`."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                             str(out)], cwd=ROOT, capture_output=True, text=True, timeout=240,
                            env={**_environ(), "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def _environ() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}


def _page(site: Path, name: str) -> str:
    return (site / "reference" / name / "index.html").read_text(encoding="utf-8")


# --- what the code has, read independently of the generator ---------------------------------


def _keys(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, sub in node.get("properties", {}).items():
        yield prefix + key
        for inner in (sub, sub.get("items"), sub.get("additionalProperties")):
            if isinstance(inner, dict) and "properties" in inner:
                yield from _keys(inner, prefix + key + ".")


def schema_keys() -> dict[str, set[str]]:
    """Every key of every definition, by the page that documents it."""
    defs = schema_document()["$defs"]
    actions = set(defs["step"]["properties"]["action"]["enum"])
    found: dict[str, set[str]] = {"yaml": set(), "actions": set(), "settings": set()}
    kinds = schema_document()["properties"]["kind"]["enum"]
    for name, node in defs.items():
        if name == SETTINGS:
            found["settings"] |= {f"key-{name}-{key}" for key in _keys(node) if key != "kind"}
        elif name == "step":
            found["actions"] |= {f"key-step-{key}" for key in _keys(node)}
        elif name.removeprefix("step_") in actions:
            found["actions"] |= {f"key-{name}-{key}" for key in _keys(node)
                                 if key not in reference.common_step_keys() | {"action"}}
        elif name in kinds or "properties" in node:
            found["yaml"] |= {f"key-{name}-{key}" for key in _keys(node)}
    found["actions"] |= {f"key-step-{key}" for key in reference.common_step_keys()}
    return found


def commands(group: click.Command, path: str = "gateway") -> Iterator[str]:
    yield path
    if isinstance(group, click.Group):
        for name, command in group.commands.items():
            yield from commands(command, f"{path} {name}")


def emitted_diagnostic_codes() -> set[str]:
    """Codes given to `error`, `warn`, `diagnostic`, `Diagnostic` or as `code=` anywhere in
    the package, and the schema's codes."""
    codes = set(CODES)
    for path in (ROOT / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            values = [k.value for k in node.keywords if k.arg == "code"]
            if name in {"error", "warn", "diagnostic", "Diagnostic"}:
                values += node.args
            codes |= {v.value for v in values if isinstance(v, ast.Constant)
                      and isinstance(v.value, str)
                      and re.fullmatch(r"[a-z_]+\.[a-z][a-z-]*", v.value)}
    return codes


# --- the site -------------------------------------------------------------------------------


def test_every_action_has_its_section(site: Path) -> None:
    html = _page(site, "actions")
    missing = [name for name in ACTIONS if f'id="action-{name}"' not in html]
    assert not missing and len(ACTIONS) > 20


def test_every_schema_key_is_in_its_reference_page(site: Path) -> None:
    for page, anchors in schema_keys().items():
        html = _page(site, page)
        missing = sorted(a for a in anchors if f'id="{a}"' not in html)
        assert not missing, f"{page}: {missing}"
    assert 'id="key-api_workflow-auth"' in _page(site, "yaml")


def test_every_setting_has_its_default(site: Path) -> None:
    html = _page(site, "settings")
    assert 'id="key-settings-limits.max_body_bytes"' in html
    assert "<code>1048576</code>" in html and "<code>300s</code>" in html


def test_the_schema_defaults_of_settings_are_the_code_defaults() -> None:
    # Setting a key to its documented default must change nothing in the settings.
    node = schema_document()["$defs"][SETTINGS]
    checked = 0
    for key in _keys(node):
        *parents, leaf = key.split(".")
        sub = node
        for part in key.split("."):
            sub = sub["properties"][part]
        if "default" not in sub or "properties" in sub:
            continue
        document: dict[str, Any] = {}
        inner = document
        for part in parents:
            inner = inner.setdefault(part, {})
        inner[leaf] = sub["default"]
        assert from_document(document) == Settings(), key
        checked += 1
    assert checked > 50


def test_every_environment_variable_and_fixed_limit_is_documented(site: Path) -> None:
    html = _page(site, "settings")
    assert all(f'id="env-{variable}"' in html for variable, _, _ in ENVIRONMENT)
    for module_name, name in reference.FIXED_LIMITS:
        assert f'id="limit-{module_name}.{name}"' in html
        assert reference.constant_comment(module_name, name), f"{module_name}.{name}"


def test_every_command_is_in_the_command_line_page(site: Path) -> None:
    html = _page(site, "cli")
    names = list(commands(main))
    missing = [name for name in names if f'id="{name.replace(" ", "-")}"' not in html]
    assert not missing and "gateway jobs list" in names


def test_every_error_code_is_documented(site: Path) -> None:
    html = _page(site, "errors")
    classes = reference.error_classes()
    assert errors.DuplicateError in classes and errors.ConfigError not in classes
    for cls in classes:
        assert f'id="error-{cls.__name__}"' in html
        assert f"<code>{cls.code}</code>" in html or reference._set_per_error(cls, "code")
        assert cls.__doc__, f"{cls.__name__} has no docstring to document it"


def test_every_diagnostic_code_is_catalogued_and_documented(site: Path) -> None:
    emitted = emitted_diagnostic_codes()
    assert "yaml.duplicate-key" in emitted and "data_api.name-clash" in emitted
    assert sorted(emitted - set(CATALOG)) == []
    # A catalogued code the code no longer names is stale (schema.const is named in prose).
    sources = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "gateway").rglob("*.py")
                      if p.name != "diagnostics.py")
    assert [code for code in CATALOG if code not in sources] == []
    html = _page(site, "diagnostics")
    assert [code for code in CATALOG if f'id="diag-{code}"' not in html] == []


def test_a_missing_name_fails_the_check(site: Path) -> None:
    # The checks above can fail: a name the site does not have is not found.
    assert 'id="action-no_such_action"' not in _page(site, "actions")
    assert 'id="key-api_workflow-no_such_key"' not in _page(site, "yaml")
