"""Templates: native values for lone expressions, strict names, the sandbox, the helpers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from jinja2 import TemplateSyntaxError

from gateway.encoding import dumps
from gateway.errors import TemplateError
from gateway.templating import (
    compile_source,
    compile_tree,
    is_template,
    lone_expression,
    parse,
    parse_date,
    references,
)

NOW = datetime(2024, 5, 1, 12, 30, 15, tzinfo=timezone.utc)
SCOPE: dict[str, Any] = {
    "params": {"n": 3, "items": [1, 2], "obj": {"a": {"b": None}}, "flag": False, "none": None,
               "text": "Hello", "injected": "{{ 7*7 }}", "when": NOW},
    "steps": {"first": {"_id": "1x2", "list": ["x"]}},
    "now": NOW,
}


def evaluate(text: str, scope: dict[str, Any] | None = None) -> Any:
    return compile_source(parse(text))(SCOPE if scope is None else scope)


@pytest.mark.parametrize(("text", "expected"), [
    ("{{ params.n }}", 3),
    ("{{ params.n + 1 }}", 4),
    ("{{ params.n / 2 }}", 1.5),
    ("{{ params.items }}", [1, 2]),
    ("{{ params.obj }}", {"a": {"b": None}}),
    ("{{ params.obj.a.b }}", None),
    ("{{ params.none }}", None),
    ("{{ params.flag }}", False),
    ("{{ params.n > 2 }}", True),
    ("{{ params['n'] }}", 3),
    ("  {{ params.text | length }}  ", 5),
    ("{{ steps.first.list }}", ["x"]),
    ("{{ {'k': params.n} }}", {"k": 3}),
    ("{{ [params.n, params.text] }}", [3, "Hello"]),
    ("{{ params.when }}", NOW),
])
def test_a_lone_expression_keeps_its_type(text: str, expected: Any) -> None:
    value = evaluate(text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("n={{ params.n }}", "n=3"),
    ("{{ params.n }}{{ params.n }}", "33"),
    ("{{ params.n }} and {{ params.flag }}", "3 and False"),
    ("{% if params.flag %}yes{% else %}no{% endif %}", "no"),
    ("{% for i in params['items'] %}{{ i }},{% endfor %}", "1,2,"),
    ("x {{ params.text }}\n", "x Hello\n"),
    ("plain text", "plain text"),
])
def test_mixed_text_renders_a_string(text: str, expected: str) -> None:
    assert evaluate(text) == expected


def test_lone_expression_detection() -> None:
    assert lone_expression("{{ a }}") == " a "
    assert lone_expression("{{ a }} {{ b }}") is None
    assert lone_expression("x {{ a }}") is None
    assert lone_expression("{% if a %}{{ a }}{% endif %}") is None
    assert is_template("{# note #}") and is_template("{% x %}") and not is_template("{ a }")


@pytest.mark.parametrize("text", [
    "{{ params.missing }}", "{{ nothing }}", "x {{ params.missing }}", "{{ params.obj.zz.q }}",
    "{{ steps.other._id }}", "{% for x in nothing %}{% endfor %}", "{{ params.missing + 1 }}",
])
def test_undefined_names_are_errors_at_run_time(text: str) -> None:
    with pytest.raises(TemplateError):
        evaluate(text)


def test_lone_expression_with_surrounding_whitespace_is_still_native() -> None:
    assert evaluate("  {{ params.n }}\n") == 3


@pytest.mark.parametrize("text", ["{{ params.items | length }}", "{{ params.items[0] }}",
                                  "n={{ params.items | length }}"])
def test_a_parameter_named_like_a_dict_method(text: str) -> None:
    assert evaluate("{{ params.items }}") == [1, 2]
    assert evaluate(text) in (2, 1, "n=2")


def test_defined_test_is_allowed_on_missing_keys() -> None:
    assert evaluate("{{ params.missing is defined }}") is False
    assert evaluate("{{ params.missing | default('d') }}") == "d"


@pytest.mark.parametrize("text", [
    "{{ ''.__class__.__mro__ }}",
    "x {{ ''.__class__ }}",
    "{{ params.items.append(3) }}",
    "{{ params.obj.pop('a') }}",
    "{{ params.obj.update({'a': 1}) }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ range(10**9) | list | length }}",
    "{{ (params.n).__class__.__subclasses__() }}",
])
def test_the_sandbox_refuses(text: str) -> None:
    scope = {**SCOPE, "params": {**SCOPE["params"], "items": [1, 2], "obj": {"a": 1}}}
    with pytest.raises(TemplateError):
        evaluate(text, scope)
    assert scope["params"]["items"] == [1, 2] and scope["params"]["obj"] == {"a": 1}


@pytest.mark.parametrize("text", ["{{ ''.__class__ }}", "{{ params.__class__ }}"])
def test_a_lone_unsafe_attribute_is_a_template_error(text: str) -> None:
    with pytest.raises(TemplateError):
        evaluate(text)


def test_helpers_for_time() -> None:
    assert evaluate("{{ now }}") == NOW
    assert evaluate("{{ now + minutes(5) }}") == NOW + timedelta(minutes=5)
    assert evaluate("{{ now - hours(2) }}") == NOW - timedelta(hours=2)
    assert evaluate("{{ now + days(1) }}") == NOW + timedelta(days=1)
    assert evaluate("{{ minutes(90) == hours(1.5) }}") is True


def test_format_date_and_parse_date() -> None:
    assert evaluate("{{ now | format_date }}") == "2024-05-01T12:30:15Z"
    assert evaluate("{{ now | format_date('%d/%m/%Y %H:%M') }}") == "01/05/2024 12:30"
    assert evaluate("{{ '2024-05-01T14:00:00+02:00' | format_date('%H:%M') }}") == "12:00"
    assert evaluate("{{ '2024-05-01T00:00:00Z' | parse_date > now }}") is False
    assert evaluate("{{ parse_date('2024-05-01T12:30:15Z') == now }}") is True


def test_tojson() -> None:
    text = evaluate("{{ params.obj | tojson }}")
    assert isinstance(text, str) and json.loads(text) == {"a": {"b": None}}
    when = json.loads(evaluate("{{ {'when': now} | tojson }}"))
    assert when == {"when": "2024-05-01T12:30:15.000000Z"}
    assert evaluate("{{ 'é' | tojson }}") == '"é"'


def test_dumps_dates_in_utc() -> None:
    paris = timezone(timedelta(hours=2))
    assert dumps({"d": datetime(2024, 5, 1, 14, 0, tzinfo=paris)}) == (
        '{"d":"2024-05-01T12:00:00.000000Z"}')
    assert dumps({"d": datetime(2024, 5, 1, 14, 0)}) == '{"d":"2024-05-01T14:00:00.000000Z"}'


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-05-01", datetime(2024, 5, 1, tzinfo=timezone.utc)),
    ("2024-05-01T10:00:00+02:00", datetime(2024, 5, 1, 8, tzinfo=timezone.utc)),
    ("2024-05-01T10:00:00z", datetime(2024, 5, 1, 10, tzinfo=timezone.utc)),
    (1714557600000, datetime(2024, 5, 1, 10, tzinfo=timezone.utc)),
])
def test_parse_date(value: Any, expected: datetime) -> None:
    parsed = parse_date(value)
    assert parsed == expected and parsed.utcoffset() == timedelta(0)


def test_no_double_rendering() -> None:
    assert evaluate("{{ params.injected }}") == "{{ 7*7 }}"
    assert evaluate("got {{ params.injected }}") == "got {{ 7*7 }}"
    tree = compile_tree({"a": "{{ params.injected }}", "b": ["x {{ params.injected }}"]},
                        lambda text, pointer: compile_source(parse(text)))
    assert tree(SCOPE) == {"a": "{{ 7*7 }}", "b": ["x {{ 7*7 }}"]}


def test_trees_of_constants_are_returned_as_is() -> None:
    calls: list[str] = []

    def leaf(text: str, pointer: str) -> Any:
        calls.append(pointer)
        return compile_source(parse(text)) if is_template(text) else (lambda scope: text)

    tree = compile_tree({"a": [1, {"b": "{{ params.n }}"}], "c": None}, leaf)
    assert tree(SCOPE) == {"a": [1, {"b": 3}], "c": None}
    assert calls == ["/a/1/b"]


def test_syntax_errors_at_parse_time() -> None:
    with pytest.raises(TemplateSyntaxError) as info:
        parse("line one\n{{ params.n + }}")
    assert info.value.lineno == 2


def test_references_on_the_ast() -> None:
    refs = references(parse("{{ params.a + params['b'] }} {{ steps.s.x }} {{ other }}"))
    assert refs.names == {"params", "steps", "other"}
    assert {(root, key) for root, key, _ in refs.attributes} >= {
        ("params", "a"), ("params", "b"), ("steps", "s")}
    loop = references(parse("{% for p in params.items %}{{ p.x }}{% endfor %}"))
    assert loop.names == {"params"}


@pytest.mark.parametrize("text", ["{{ 'a' * 10**9 }}", "{{ [0] * 10**9 }}", "{{ 2 ** 5000 }}",
                                  "x{{ 'ab' * params.n }}"])
def test_arithmetic_cannot_build_huge_values(text: str) -> None:
    render = compile_source(parse(text))
    with pytest.raises(TemplateError, match="would build|not allowed"):
        render({"params": {"n": 10**9}})
