"""The reference pages of the documentation, made from the code at build time.

MkDocs loads this module as a hook (`hooks:` in mkdocs.yml): `on_files` adds each page of
`PAGES` to the site. Nothing here is written by hand about a key, an action, a setting, an
error or a diagnostic code: the words come from the JSON Schema's descriptions, the action
table (`gateway.actions.ACTIONS`), the settings' defaults, the error classes' docstrings,
the diagnostic catalog and the comments beside the fixed limits. The command line's page is
made by mkdocs-click from the click group (`docs/reference/cli.md`).

`pages()` is plain Python, so a test can call it without MkDocs.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from mkdocs.structure.files import File

from gateway.actions import ACTIONS
from gateway.config.diagnostics import CATALOG
from gateway.config.schema import schema_document
from gateway.core import errors
from gateway.core.settings import ENVIRONMENT

SETTINGS_KIND = "settings"
STEP_PREFIX = "step_"
# Limits fixed in the code rather than set in the settings: the module and the constant.
# Each constant's description is its comment in the code (beside it, or just above it).
FIXED_LIMITS: tuple[tuple[str, str], ...] = (
    ("gateway.actions.records", "MAX_PAGE"),
    ("gateway.api.data_operations", "MAX_LIMIT"),
    ("gateway.api.data_operations", "MAX_CONSTRAINTS"),
    ("gateway.api.data_operations", "MAX_SORT_FIELDS"),
    ("gateway.api.data_operations", "MAX_BULK"),
    ("gateway.api.detection", "MAX_PARAMS"),
    ("gateway.api.auth", "MAX_CREDENTIAL"),
    ("gateway.api.auth", "KEY_CACHE_SECONDS"),
    ("gateway.actions.http_request", "MAX_ATTEMPTS"),
    ("gateway.actions.http_request", "MAX_RETRY_AFTER"),
    ("gateway.actions.idempotency_key", "MAX_IDEMPOTENCY_KEY"),
    ("gateway.runtime.checkpoints", "MAX_RESULT_BYTES"),
    ("gateway.runtime.accounts", "MAX_PASSWORD"),
    ("gateway.runtime.accounts", "MAX_EMAIL"),
    ("gateway.runtime.accounts", "FREE_FAILURES"),
    ("gateway.runtime.login_throttle", "FIRST_DELAY"),
    ("gateway.runtime.accounts", "MAX_DELAY"),
    ("gateway.runtime.accounts", "FAILURE_MEMORY"),
    ("gateway.runtime.accounts", "QUEUE"),
    ("gateway.runtime.model", "DEFAULT_TOLERANCE"),
    ("gateway.templates.sandbox", "MAX_POWER"),
    ("gateway.config.source", "MAX_ALIAS_NODES"),
    ("gateway.storage.common.limits", "MAX_INDEXED_TEXT_BYTES"),
    ("gateway.storage.common.limits", "MAX_DEPTH"),
    ("gateway.storage.sqlite.key_memory", "MEMORY_KEYS"),
    ("gateway.storage.sqlite.key_memory", "MEMORY_BYTES"),
    ("gateway.console.paging", "PAGE"),
    ("gateway.console.paging", "MAX_FILTER"),
    ("gateway.console.pages", "MAX_FORM"),
    ("gateway.console.runs_page", "SEARCH_SCAN"),
    ("gateway.console.session", "FREE_FAILURES"),
    ("gateway.console.session", "MAX_DELAY"),
    ("gateway.console.session", "MIN_SECRET"),
)


# --- the JSON Schema ------------------------------------------------------------------------


def _defs() -> dict[str, Any]:
    defs: dict[str, Any] = schema_document()["$defs"]
    return defs


def _ref_name(node: Mapping[str, Any]) -> str | None:
    ref = node.get("$ref")
    return str(ref).rsplit("/", 1)[-1] if ref else None


def description(node: Mapping[str, Any]) -> str:
    """A node's own description, else that of the definition it refers to."""
    if "description" in node:
        return str(node["description"])
    name = _ref_name(node)
    return description(_defs()[name]) if name else ""


def key_paths(node: Mapping[str, Any], anchor: str = "",
              shown: str = "") -> Iterator[tuple[str, str, Any]]:
    """Every key a node takes, nested inline objects included: (anchor path, shown path,
    schema of the key). `[]` marks the items of a list, `.*` any key of a mapping."""
    required = set(node.get("required", ()))
    for key, sub in node.get("properties", {}).items():
        here, seen = anchor + key, shown + key
        yield here, seen, {**sub, "_required": key in required}
        for inner, mark in ((sub, ""), (sub.get("items"), "[]"),
                            (sub.get("additionalProperties"), ".*")):
            if isinstance(inner, dict) and "properties" in inner:
                yield from key_paths(inner, here + ".", seen + mark + ".")


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return "`" + text.replace("|", "\\|") + "`" if text != "" else '`""`'


def type_of(node: Mapping[str, Any], page: str = "yaml.md") -> str:
    """What a key takes, in a few words, with a link to a shared definition it refers to."""
    name = _ref_name(node)
    if name is not None:
        target = "actions.md" if name in {"steps", "step"} else ""
        link = f"{target}#def-{name}" if target or page == "yaml.md" else f"yaml.md#def-{name}"
        if target and page == "actions.md":
            link = f"#def-{name}"
        return f"[{name}]({link})"
    if "const" in node:
        return _code(node["const"])
    if "enum" in node:
        return "one of " + ", ".join(_code(v) for v in node["enum"])
    kinds = node.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds] if kinds else []
    words = []
    for kind in kinds:
        if kind == "array" and isinstance(node.get("items"), dict):
            words.append("list of " + type_of(node["items"], page))
        elif kind == "object" and isinstance(node.get("additionalProperties"), dict):
            words.append("mapping to " + type_of(node["additionalProperties"], page))
        elif kind == "string" and "pattern" in node and "{{" in node["pattern"].replace(
                "\\{", "{"):
            words.append("template")
        else:
            words.append(str(kind))
    return " or ".join(words) or "any value"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def key_table(owner: str, node: Mapping[str, Any], page: str,
              skip: frozenset[str] = frozenset()) -> list[str]:
    """A table of a node's keys; each row has the anchor `key-<owner>-<path>`."""
    rows = ["| key | takes | default | description |", "| --- | --- | --- | --- |"]
    for anchor, shown, sub in key_paths(node):
        if anchor in skip:
            continue
        default = _code(sub["default"]) if "default" in sub else (
            "required" if sub["_required"] else "")
        rows.append(f'| <a id="key-{owner}-{anchor}"></a>`{shown}` | {type_of(sub, page)} | '
                    f"{default} | {_cell(description(sub))} |")
    return rows if len(rows) > 2 else []


def _referenced(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        name = _ref_name(node)
        if name is not None and name not in found:
            found.add(name)
            _referenced(_defs()[name], found)
        for value in node.values():
            _referenced(value, found)
    elif isinstance(node, list):
        for value in node:
            _referenced(value, found)


def kinds() -> list[str]:
    return list(schema_document()["properties"]["kind"]["enum"])


def shared_definitions() -> list[str]:
    """The definitions the kinds share (not a kind, a step action or the settings)."""
    found: set[str] = set()
    for kind in kinds():
        if kind != SETTINGS_KIND:
            _referenced(_defs()[kind], found)
    steps = {STEP_PREFIX + action for action in step_actions()}
    return sorted(found - set(kinds()) - steps - {"step", "steps"})


def step_actions() -> list[str]:
    """The actions the schema has a step definition for."""
    return list(_defs()["step"]["properties"]["action"]["enum"])


def yaml_page() -> str:
    defs = _defs()
    out = ["# YAML reference", "",
           "Every key of every kind of document, from the JSON Schema the gateway validates "
           "against (`gateway schema` prints it). A key's type links to its shared definition "
           "below; the keys of each step action are in the [actions reference](actions.md), "
           "and the settings in the [settings reference](settings.md).", "",
           _cell(schema_document()["description"]), "", "## Kinds of document", ""]
    for kind in kinds():
        out += [f"### `{kind}` {{#kind-{kind}}}", "", _cell(description(defs[kind])), ""]
        if kind == SETTINGS_KIND:
            out += ["Its keys are in the [settings reference](settings.md).", ""]
            continue
        out += key_table(kind, defs[kind], "yaml.md") + [""]
    out += ["## Shared definitions", ""]
    for name in shared_definitions():
        node = defs[name]
        out += [f"### `{name}` {{#def-{name}}}", "", _cell(description(node)), ""]
        table = key_table(name, node, "yaml.md")
        out += table or [f"Takes: {type_of(node)}."]
        out.append("")
    return "\n".join(out)


# --- actions --------------------------------------------------------------------------------


def common_step_keys() -> frozenset[str]:
    """The keys every step takes, whatever its action."""
    steps = [set(_defs()[STEP_PREFIX + action].get("properties", {}))
             for action in step_actions()]
    return frozenset(set.intersection(*steps) - {"action"})


def _family(module_name: str) -> str:
    doc = sys.modules[module_name].__doc__ or module_name
    return doc.split("\n\n")[0].split(":")[0].strip().rstrip(".")


def _facts(name: str) -> str:
    action = ACTIONS[name]
    facts = []
    if action.writes:
        facts.append("writes records, in the run's transaction")
    if action.outbound:
        facts.append("acts outside the database: checkpointed in a job's run, and restored "
                     "rather than done again when the job is retried")
    if action.replies:
        facts.append("ends the run with its reply")
    if action.replies_by_default:
        facts.append("its result is the reply when no step returns data")
    if action.event_arg:
        facts.append(f"runs the custom event named by `{action.event_arg}` inline")
    if not action.waits:
        facts.append("never waits on anything outside the run")
    return ("It " + "; ".join(facts) + ".") if facts else ""


def actions_page() -> str:
    defs = _defs()
    common = common_step_keys()
    step = defs["step_terminate"]
    out = ["# Actions reference", "",
           f"The {len(ACTIONS)} step actions, from the action table and the JSON Schema. "
           "A step is a mapping with an `action`; the [steps guide](../guides/steps.md) "
           "shows them at work.", "",
           '## Every step {#def-step}', "", _cell(description(defs["step"])), "",
           "| key | takes | default | description |", "| --- | --- | --- | --- |"]
    for key in sorted(common | {"action"}):
        sub = (defs["step"] if key == "action" else step)["properties"][key]
        default = _code(sub["default"]) if "default" in sub else ""
        out.append(f'| <a id="key-step-{key}"></a>`{key}` | {type_of(sub, "actions.md")} | '
                   f"{default} | {_cell(description(sub))} |")
    out += ["", f'<a id="def-steps"></a>`steps`: {_cell(description(defs["steps"]))}', ""]
    family = None
    for name, action in ACTIONS.items():
        module = action.execute.__module__
        if module != family:
            family = module
            out += [f"## {_family(module)}", ""]
        node = defs[STEP_PREFIX + name]
        out += [f"### `{name}` {{#action-{name}}}", "",
                _cell(description(node["properties"]["action"])), ""]
        if _facts(name):
            out += [_facts(name), ""]
        table = key_table(STEP_PREFIX + name, node, "actions.md", skip=common | {"action"})
        out += (table or ["No other key."]) + [""]
    return "\n".join(out)


# --- settings and limits --------------------------------------------------------------------


def constant_comment(module_name: str, name: str) -> str:
    """The comment of a module-level constant: beside it, else the block of comment lines
    above it (and above the constants it stands with)."""
    lines = inspect.getsource(importlib.import_module(module_name)).splitlines()
    pattern = re.compile(rf"^{re.escape(name)}\s*(:[^=]*)?=")
    for number, line in enumerate(lines):
        if pattern.match(line):
            if "  # " in line:
                return line.split("  # ", 1)[1].strip()
            above: list[str] = []
            for previous in reversed(lines[:number]):
                if previous.startswith("#"):
                    above.insert(0, previous.lstrip("# ").strip())
                elif above or not re.match(r"^[A-Z_]+\s*(:[^=]*)?=", previous):
                    break
            return " ".join(above)
    raise LookupError(f"{module_name}.{name} is not a module-level constant")


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def settings_page() -> str:
    node = _defs()[SETTINGS_KIND]
    out = ["# Settings reference", "",
           _cell(description(node["properties"]["kind"])), "",
           "At most one `kind: settings` document; every key is optional. Durations are a "
           "whole number and a unit (`250ms`, `30s`, `5m`, `24h`, `14d`).", "",
           "## Keys", ""]
    out += key_table(SETTINGS_KIND, node, "settings.md", skip=frozenset({"kind"}))
    out += ["", "## Environment variables", "",
            "Each overrides the settings document; the command line's flags override both. "
            "Declared `secrets` are read from the environment too, by their own names.", "",
            "| variable | overrides |", "| --- | --- |"]
    for variable, _, key in ENVIRONMENT:
        out.append(f'| <a id="env-{variable}"></a>`{variable}` | '
                   f"[`{key}`](#key-{SETTINGS_KIND}-{key}) |")
    out += ["", "## Fixed limits", "",
            "Bounds that are not settings: facts of Bubble's API, of the databases, or "
            "safety margins.", "", "| limit | value | what it bounds |", "| --- | --- | --- |"]
    for module_name, name in FIXED_LIMITS:
        value = getattr(importlib.import_module(module_name), name)
        out.append(f'| <a id="limit-{module_name}.{name}"></a>`{module_name}.{name}` | '
                   f"{_number(value)} | {_cell(constant_comment(module_name, name))} |")
    return "\n".join(out) + "\n"


# --- errors and diagnostics -----------------------------------------------------------------


def error_classes() -> list[type[errors.GatewayError]]:
    """The gateway's error classes, in the order `gateway.core.errors` defines them."""
    found: list[type[errors.GatewayError]] = []
    pending: list[type[errors.GatewayError]] = [errors.GatewayError]
    while pending:
        cls = pending.pop()
        if cls is not errors.ConfigError:
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: inspect.getsourcelines(cls)[1])


def _set_per_error(cls: type, attribute: str) -> bool:
    init = cls.__dict__.get("__init__")
    return init is not None and f"self.{attribute} =" in inspect.getsource(init)


def errors_page() -> str:
    out = ["# Error codes", "",
           "Every error answers `{\"statusCode\": N, \"body\": {\"status\": CODE, "
           "\"message\": ...}}`. The [workflows guide](../guides/workflows.md#responses-and-"
           "errors) says when each occurs; this table is made from the error classes.", "",
           "| code | status | error | what it means |", "| --- | --- | --- | --- |"]
    for cls in error_classes():
        code = "set by the step or request" if _set_per_error(cls, "code") else f"`{cls.code}`"
        status = "varies" if _set_per_error(cls, "status") else str(cls.status)
        doc = _cell(inspect.getdoc(cls) or "")
        out.append(f'| <a id="error-{cls.__name__}"></a>{code} | {status} | '
                   f"`{cls.__name__}` | {doc} |")
    return "\n".join(out) + "\n"


def diagnostics_page() -> str:
    out = ["# Diagnostic codes", "",
           "`gateway validate`, `gateway serve` and a refused reload report each problem of "
           "the config on one line, `file:line:col: error[code]: message (at /pointer)`, "
           "every problem at once; `--format json` gives the same as data. The code is "
           "stable: match on it, not on the message.", ""]
    area = None
    for code, meaning in sorted(CATALOG.items()):
        if code.split(".")[0] != area:
            area = code.split(".")[0]
            out += ["", f"## `{area}`", "", "| code | meaning |", "| --- | --- |"]
        out.append(f'| <a id="diag-{code}"></a>`{code}` | {_cell(meaning)} |')
    return "\n".join(out) + "\n"


PAGES: dict[str, Callable[[], str]] = {
    "reference/yaml.md": yaml_page,
    "reference/actions.md": actions_page,
    "reference/settings.md": settings_page,
    "reference/errors.md": errors_page,
    "reference/diagnostics.md": diagnostics_page,
}


def pages() -> dict[str, str]:
    """Every generated page, by its path under `docs/`."""
    return {path: make() for path, make in PAGES.items()}


def on_files(files: Any, config: Any) -> Any:
    """MkDocs' hook: add the generated pages to the site."""
    for path, content in pages().items():
        files.append(File.generated(config, path, content=content))
    return files
