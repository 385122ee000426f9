"""`gateway validate` against golden files: every diagnostic code, exact text, exit codes.

Each folder under `configs/invalid/` holds YAML files and `expected.txt`, the exact output of
`gateway validate <folder>` run from `configs/invalid/` (an `args.txt` replaces the folder by
other arguments; an `xfail.txt` marks a known bug, its expected output being the right one).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from support import example_folders

from gateway.cli import main
from gateway.compiler.loader import load
from gateway.core.errors import ConfigError

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
VALID = TESTS / "configs" / "valid"
INVALID = TESTS / "configs" / "invalid"
SCHEMA = REPO / "schemas" / "gateway.schema.json"

_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<column>\d+): (?:error|warning)"
                   r"\[(?P<code>[a-z.-]+)\]: (?P<message>.*?)(?: \(at (?P<pointer>/\S*)\))?$")
# The string literals that name a code, as the brief for codes says: `area.kebab-name`.
_CODE_LITERAL = re.compile(
    r"[\"']((?:yaml|file|schema|template|ref|event|name|route|settings|step|value|constraint)"
    r"\.[a-z-]+)[\"']")
# Schema keywords whose failures are reported by the keywords under them, never by themselves.
_SILENT_KEYWORDS = frozenset({
    "$schema", "$id", "$defs", "$ref", "$comment", "title", "description", "default",
    "examples", "properties", "patternProperties", "items", "prefixItems", "allOf", "anyOf",
    "oneOf", "if", "then", "else", "propertyNames", "dependentSchemas",
})
_SUBSCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
_SUBSCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SUBSCHEMA_ONE = frozenset({"items", "additionalProperties", "propertyNames", "contains", "not",
                            "if", "then", "else", "unevaluatedProperties", "unevaluatedItems"})
# Codes the code base names but no config can produce, with the reason (reported as bugs).
UNREACHABLE = {
    "schema.const": "every `const` in the schema sits in a branch chosen by that very value "
                    "(`kind`, `action`), so it always holds",
}


def _cases() -> list[Any]:
    params = []
    for folder in sorted(p for p in INVALID.iterdir() if p.is_dir()):
        xfail = folder / "xfail.txt"
        marks = [pytest.mark.xfail(strict=True, reason=xfail.read_text().strip())] \
            if xfail.exists() else []
        params.append(pytest.param(folder.name, marks=marks, id=folder.name))
    return params


def _args(case: str) -> list[str]:
    args = INVALID / case / "args.txt"
    return args.read_text().split() if args.exists() else [case]


def _expected(case: str) -> str:
    return (INVALID / case / "expected.txt").read_text()


def _validate(*args: str) -> Result:
    return CliRunner().invoke(main, ["validate", *args], catch_exceptions=False)


@pytest.fixture
def in_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(INVALID)


# --- golden files -----------------------------------------------------------------------------


@pytest.mark.usefixtures("in_invalid")
@pytest.mark.parametrize("case", _cases())
def test_invalid_case_output_is_exactly_the_golden_file(case: str) -> None:
    result = _validate(*_args(case))
    assert result.stdout == _expected(case)
    # Warnings alone are printed and do not fail validation; an error does.
    assert result.exit_code == (1 if " error[" in _expected(case) else 0)


def test_a_config_with_warnings_only_loads(in_invalid: None) -> None:
    registry = load([Path("access-unchecked-current-user")])
    assert "hello" in registry.workflows
    with pytest.raises(ConfigError):
        load([Path("access-public-privileged")])


@pytest.mark.parametrize("config", sorted(p.name for p in VALID.glob("*.yaml")))
def test_valid_config_alone_is_clean(config: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # types.yaml is needed by the files that use its data types; validate each with it.
    monkeypatch.chdir(VALID)
    result = _validate(*sorted({config, "types.yaml", "settings.yaml"}))
    assert (result.stdout, result.exit_code) == ("ok\n", 0)


def test_valid_folder_is_clean() -> None:
    result = _validate(str(VALID))
    assert (result.stdout, result.exit_code) == ("ok\n", 0)


def test_every_file_in_workflows_d_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = REPO / "workflows.d"
    folder.mkdir(exist_ok=True)  # an empty or absent folder is still validated
    monkeypatch.chdir(REPO)
    result = _validate("workflows.d")
    assert (result.stdout, result.exit_code) == ("ok\n", 0)


@pytest.mark.parametrize("folder", [f.name for f in example_folders()])
def test_every_folder_of_examples_validates(folder: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = _validate(f"examples/{folder}")
    assert (result.stdout, result.exit_code) == ("ok\n", 0)


def test_the_files_of_a_case_in_any_order_give_the_same_output(in_invalid: None) -> None:
    files = sorted(str(p.relative_to(INVALID)) for p in (INVALID / "many-problems").rglob("*.yaml"))
    result = _validate(*reversed(files))
    assert result.stdout == _expected("many-problems")


def test_validate_as_a_real_process() -> None:
    process = subprocess.run([sys.executable, "-m", "gateway", "validate", "many-problems"],
                             cwd=INVALID, capture_output=True, text=True, timeout=60, check=False)
    assert (process.stdout, process.stderr, process.returncode) == (
        _expected("many-problems"), "", 1)


# --- JSON and usage errors --------------------------------------------------------------------


def test_json_format_carries_every_field_of_the_text_format(in_invalid: None) -> None:
    result = _validate("many-problems", "--format", "json")
    payload = json.loads(result.stdout)
    assert result.exit_code == 1
    assert payload["ok"] is False
    assert payload["files"] == 5
    golden = [_LINE.match(line) for line in _expected("many-problems").splitlines()[:-1]]
    expected = [{"file": m["file"], "line": int(m["line"]), "column": int(m["column"]),
                 "severity": "error", "code": m["code"], "message": m["message"],
                 "pointer": m["pointer"] or ""} for m in golden if m]
    assert payload["diagnostics"] == expected


def test_json_format_of_a_clean_config() -> None:
    result = _validate(str(VALID), "--format", "json")
    assert json.loads(result.stdout) == {"ok": True, "diagnostics": [],
                                         "files": len(list(VALID.glob("*.yaml")))}
    assert result.exit_code == 0


@pytest.mark.parametrize("args", [["--format", "xml"], ["--no-such-option"]],
                         ids=["bad-format", "unknown-option"])
def test_usage_error_exits_2(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["validate", str(VALID), *args])
    assert result.exit_code == 2
    assert "Usage:" in result.output


# --- every code has a golden case -------------------------------------------------------------


def _literal_codes() -> set[str]:
    codes: set[str] = set()
    for path in (REPO / "gateway").rglob("*.py"):
        codes.update(_CODE_LITERAL.findall(path.read_text()))
        codes.update(_call_codes(ast.parse(path.read_text())))
    return codes


def _call_codes(tree: ast.AST) -> Iterator[str]:
    """Codes given to `error(...)`, `warn(...)`, `diagnostic(...)`, `Diagnostic(...)` or as
    `code=`, so a new area of codes is found even when its prefix is not in `_CODE_LITERAL`."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        values = [k.value for k in node.keywords if k.arg == "code"]
        if name in {"error", "warn", "diagnostic", "Diagnostic"}:
            values += node.args
        for value in values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str) \
                    and re.fullmatch(r"[a-z]+\.[a-z][a-z-]*", value.value):
                yield value.value


def _schema_keywords(node: Any) -> Iterator[str]:
    if not isinstance(node, dict):
        return
    for keyword, value in node.items():
        yield keyword
        if keyword in _SUBSCHEMA_MAPS and isinstance(value, dict):
            for sub in value.values():
                yield from _schema_keywords(sub)
        elif keyword in _SUBSCHEMA_LISTS and isinstance(value, list):
            for sub in value:
                yield from _schema_keywords(sub)
        elif keyword in _SUBSCHEMA_ONE:
            yield from _schema_keywords(value)


def _schema_codes() -> set[str]:
    keywords = set(_schema_keywords(json.loads(SCHEMA.read_text()))) - _SILENT_KEYWORDS
    kebab = {re.sub(r"(?<!^)([A-Z])", r"-\1", k).lower() for k in keywords}
    return {f"schema.{k}" for k in kebab} | {"schema.kind", "schema.additional-properties"}


def emitted_codes() -> set[str]:
    return _literal_codes() | _schema_codes()


def golden_codes() -> set[str]:
    codes: set[str] = set()
    for folder in INVALID.iterdir():
        if (folder / "expected.txt").exists() and not (folder / "xfail.txt").exists():
            codes.update(m["code"] for m in map(_LINE.match, _expected(folder.name).splitlines())
                         if m)
    return codes


def test_every_code_the_code_base_can_emit_has_a_golden_case() -> None:
    missing = emitted_codes() - golden_codes() - set(UNREACHABLE)
    assert not missing, f"codes without a golden case in configs/invalid/: {sorted(missing)}"


def test_golden_files_use_only_codes_the_code_base_knows() -> None:
    assert golden_codes() <= emitted_codes()


def test_unreachable_codes_are_still_in_the_code_base() -> None:
    # When one of them is removed or becomes reachable, this list must be revisited.
    assert set(UNREACHABLE) <= emitted_codes()
    assert not set(UNREACHABLE) & golden_codes()


def test_the_code_collection_finds_codes_of_every_pass() -> None:
    codes = emitted_codes()
    for code in ("yaml.duplicate-key", "file.not-found", "schema.enum", "schema.kind",
                 "template.syntax", "ref.unknown-param", "event.cycle", "route.conflict"):
        assert code in codes


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "a.yaml").write_text(
        "kind: api_workflow\nname: a\nauth: none\nsteps:\n  - action: terminate\n")
    result = CliRunner().invoke(main, ["validate", str(folder), str(folder / "a.yaml"),
                                       str(folder / "a.yaml")])
    assert (result.exit_code, result.output) == (0, "ok\n")
