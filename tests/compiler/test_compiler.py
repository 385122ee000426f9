"""Semantic checks of the compiler on whole configs, beyond what the golden files show."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gateway.compiler import Compiler
from gateway.compiler.kinds import KINDS
from gateway.config import schema
from gateway.config.source import Document, DocumentKind, load_text
from gateway.core.errors import Diagnostic
from gateway.runtime.model import Registry


def _documents(*texts: str) -> list[Document]:
    documents = []
    for index, text in enumerate(texts):
        docs, problems, _ = load_text(text, f"f{index}.yaml")
        assert problems == []
        for doc in docs:
            assert schema.check(doc) == []
        documents.extend(docs)
    return documents


def _compile(*texts: str, codegen: bool = True) -> tuple[Registry, list[Diagnostic]]:
    compiler = Compiler(_documents(*texts), codegen=codegen)
    registry = compiler.compile()
    return registry, sorted(compiler.diagnostics)


def _codes(*texts: str) -> list[tuple[str, str]]:
    return [(d.code, d.pointer) for d in _compile(*texts)[1]]


def _workflow(steps: str, params: str = "", kind: str = "api_workflow", name: str = "w") -> str:
    auth = "auth: none\n" if kind == "api_workflow" else ""
    return f"kind: {kind}\nname: {name}\n{auth}{params}steps:\n{steps}"


def _log(message: str) -> str:
    return f"  - action: log\n    message: '{message}'\n"


@pytest.mark.parametrize("template", [
    "{% for tag in params.tags %}{{ tag }}{% endfor %}",
    "{% set total = params.tags | length %}{{ total }}",
    "{{ range(3) | list }} {{ now - days(1) }} {{ dict(a=1) }}",
    '{{ params.tags[0] }} {{ params["tags"] }}',
    "{# a comment #}{{ run.id }} {{ current_user }}",
    "{ not a template }",
])
def test_names_a_template_may_use(template: str) -> None:
    params = "params:\n  tags: {type: text, list: true}\n"
    assert _codes(_workflow(_log(template), params)) == []


def test_request_is_for_api_workflows_only() -> None:
    steps = _log("{{ request.headers }}")
    assert _codes(_workflow(steps)) == []
    assert _codes(_workflow(steps, kind="custom_event")) == [
        ("template.undefined-name", "/steps/0/message")]


def test_every_undefined_name_and_reference_in_one_template_is_reported() -> None:
    template = "{{ parms }} {{ params.a }} {{ steps.b }} {{ secrets.C }}"
    assert _codes(_workflow(_log(template))) == [
        ("ref.unknown-param", "/steps/0/message"),
        ("ref.unknown-secret", "/steps/0/message"),
        ("ref.unknown-step", "/steps/0/message"),
        ("template.undefined-name", "/steps/0/message"),
    ]


def test_templates_in_nested_step_values_are_located_by_pointer() -> None:
    steps = ("  - action: set\n    values:\n      a: [1, {b: '{{ params.x }}'}]\n")
    problems = _compile(_workflow(steps))[1]
    assert [(p.line, p.column, p.pointer) for p in problems] == [
        (7, 18, "/steps/0/values/a/1/b")]


def test_a_step_sees_the_steps_before_it_only() -> None:
    steps = ("  - id: one\n    action: set\n    values: {x: '{{ steps.two }}'}\n"
             "  - id: two\n    action: set\n    values: {x: '{{ steps.one.x }}'}\n")
    problems = _compile(_workflow(steps))[1]
    assert [(p.pointer, "later step" in p.message) for p in problems] == [
        ("/steps/0/values/x", True)]


def test_a_condition_may_use_steps_before_its_step() -> None:
    steps = ("  - id: one\n    action: set\n    values: {x: 1}\n"
             "  - action: log\n    only_when: '{{ steps.one.x }}'\n    message: m\n")
    assert _codes(_workflow(steps)) == []


def test_the_workflow_condition_sees_no_step() -> None:
    text = _workflow("  - id: one\n    action: set\n    values: {x: 1}\n").replace(
        "steps:", "only_when: '{{ steps.one }}'\nsteps:")
    assert _codes(text) == [("ref.unknown-step", "/only_when")]


def test_declared_secrets_are_known() -> None:
    settings = "kind: settings\nsecrets: [API_KEY]\n"
    assert _codes(settings, _workflow(_log("{{ secrets.API_KEY }}"))) == []


def test_validation_without_code_generation_finds_the_same_problems() -> None:
    text = _workflow(_log("{{ params.x }} {% if %}") + _log("{{ nope }}"))
    assert _compile(text, codegen=False)[1] == _compile(text, codegen=True)[1]


def test_an_event_calling_into_a_loop_is_not_itself_reported() -> None:
    def event(name: str, calls: str) -> str:
        return _workflow(f"  - action: trigger_event\n    event: {calls}\n", kind="custom_event",
                         name=name)

    problems = _compile(event("a", "b"), event("b", "c"), event("c", "b"))[1]
    assert [(p.file, p.message) for p in problems] == [
        ("f1.yaml", "custom events call each other in a loop: b -> c -> b"),
        ("f2.yaml", "custom events call each other in a loop: c -> b -> c"),
    ]


def test_api_workflows_and_events_have_separate_names() -> None:
    event = _workflow("  - action: terminate\n", kind="custom_event", name="same")
    assert _codes(event, _workflow("  - action: terminate\n", name="same")) == []


def test_a_workflow_not_exposed_shares_no_route() -> None:
    exposed = _workflow("  - action: terminate\n").replace("auth:", "expose: true\nauth:")
    hidden = _workflow("  - action: terminate\n")
    assert _codes(exposed, hidden) == [("name.duplicate", "/name")]


def test_the_registry_holds_what_was_declared() -> None:
    params = ("params:\n  n: {type: integer, optional: true, default: 2}\n"
              "  q: {type: text, in: query}\n  tags: {type: text, list: true, optional: true}\n")
    text = _workflow("  - action: terminate\n", params).replace(
        "auth: none", "expose: true\nauth: user\nmethod: GET")
    registry, problems = _compile(text)
    assert problems == []
    workflow = registry.workflows["w"]
    assert (workflow.expose, workflow.auth, workflow.method, workflow.location) == (
        True, "user", "GET", "f0.yaml:1")
    assert [(p.name, p.type, p.list, p.optional, p.default, p.in_query)
            for p in workflow.params] == [
        ("n", "integer", False, True, 2, False), ("q", "text", False, False, None, True),
        ("tags", "text", True, True, None, False)]


@pytest.mark.parametrize(("type_name", "default"), [
    ("integer", "'12'"), ("number", "1e3"), ("boolean", "'yes'"), ("date", "2024-02-29"),
    ("object", "{a: [1]}"), ("text", "7"), ("user", "abc123"),
])
def test_defaults_that_convert_to_their_type(type_name: str, default: str) -> None:
    params = f"params:\n  p: {{type: {type_name}, optional: true, default: {default}}}\n"
    assert _codes(_workflow("  - action: terminate\n", params)) == []


def test_a_template_default_is_refused() -> None:
    params = "params:\n  when: {type: date, optional: true, default: '{{ params.nope }}'}\n"
    assert _codes(_workflow("  - action: terminate\n", params)) == [
        ("param.template-default", "/params/when/default")]


def _event_with_returns(steps: str) -> str:
    return ("kind: custom_event\nname: e\nreturns:\n  email: {type: text}\n"
            f"steps:\n{steps}")


def test_a_template_for_the_whole_return_data_is_not_checked_against_returns() -> None:
    steps = "  - id: s\n    action: set\n    values: {email: x}\n" \
            "  - action: return_data\n    data: '{{ steps.s }}'\n"
    assert _codes(_event_with_returns(steps)) == []


def test_a_return_without_data_misses_the_declared_returns() -> None:
    assert _codes(_event_with_returns("  - action: return_data\n")) == [
        ("event.bad-return", "/steps/0")]


def test_an_event_declaring_returns_must_return_them() -> None:
    assert _codes(_event_with_returns("  - action: terminate\n")) == [
        ("event.bad-return", "/returns")]


def test_an_event_returning_data_must_declare_returns() -> None:
    event = "kind: custom_event\nname: e\nsteps:\n  - action: return_data\n    data: {x: 1}\n"
    assert _codes(event) == [("event.bad-return", "/steps/0")]


def test_constant_event_parameters_are_checked_against_their_types() -> None:
    event = "kind: custom_event\nname: e\nparams: {n: {type: integer}}\n" \
            "steps:\n  - action: terminate\n"
    caller = _workflow("  - action: trigger_event\n    event: e\n    params: {n: abc}\n")
    assert _codes(event, caller) == [("value.type-mismatch", "/steps/0/params/n")]


def test_a_step_using_its_own_result_is_told_so() -> None:
    problems = _compile(_workflow("  - id: me\n    action: set\n"
                                  "    values: {x: '{{ steps.me }}'}\n"))[1]
    assert [p.code for p in problems] == ["ref.unknown-step"]
    assert "this step itself" in problems[0].message


def test_text_contains_on_a_list_field_is_a_mismatch() -> None:
    types = "kind: data_type\nname: t\nfields: {tags: {type: text, list: true}}\n"
    search = _workflow("  - action: search\n    type: t\n    constraints:\n"
                       "      - {key: tags, constraint: text_contains, value: x}\n")
    assert _codes(types, search) == [("constraint.mismatch", "/steps/0/constraints/0/constraint")]


def test_a_message_without_from_takes_the_settings_sender() -> None:
    step = "  - {action: send_email, to: a@example.com, subject: s, text: t}\n"
    assert _codes(_workflow(step)) == [("step.no-sender", "/steps/0")]
    settings = "kind: settings\nsmtp: {host: mail.example.com, from: gw@example.com}\n"
    assert _codes(settings, _workflow(step)) == []


# A kind's name written out in the code, where it is not a kind: `gateway jobs list --json`
# prints a recurring event's line under this key.
NOT_A_KIND = {("gateway/cli/jobs.py", "recurring_event")}


def test_kind_names_are_written_once() -> None:
    """Every kind has its row in the compiler's table, and no module but the enum's writes a
    kind's name: a new kind is a member of `DocumentKind` and a row of `KINDS`."""
    assert [kind.name for kind in KINDS] == list(DocumentKind)
    root = Path(__file__).resolve().parents[2]
    names = {kind.value for kind in DocumentKind}
    written = sorted(
        (path.relative_to(root).as_posix(), node.value)
        for path in (root / "gateway").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value in names)
    assert [place for place in written if place not in NOT_A_KIND
            and place[0] != "gateway/config/source.py"] == []
