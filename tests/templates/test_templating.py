"""Templates: native values for lone expressions, strict names, the sandbox, the helpers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from jinja2 import TemplateSyntaxError, Undefined
from jinja2.exceptions import SecurityError, UndefinedError

from gateway.core.encoding import dumps
from gateway.core.errors import TemplateError
from gateway.templates import budget
from gateway.templates.environment import ENV, parse_date
from gateway.templates.lookups import compile_lookup, lookup_parts
from gateway.templates.templating import (
    _expression_node,
    compile_source,
    compile_tree,
    is_template,
    lone_expression,
    parse,
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


# Lookups (through dicts, with everyday filters, evaluated in plain Python) must give exactly
# what Jinja gives, or leave the template to Jinja: each template below is compared
# with Jinja's own result on every scope, errors included.
class _Mapping(dict[str, Any]):
    """A dict that is not exactly a dict: a lookup leaves it to Jinja."""


_PARAMS: dict[str, Any] = {
    "name": "  Ada Lovelace ", "email": "Ada@Example.COM", "text": "hello world", "none": None,
    "empty": "", "zero": 0, "flag": False, "n": -3, "price": 2.675, "digits": "42",
    "items": [1, "two", None], "obj": {"a": {"b": None}, "items": "the key wins"},
    "odd": {"__class__": "a key, not the class"}, "when": NOW, "sub": _Mapping(x="y", items="key"),
    "injected": "{{ 7*7 }}", "words": ["a", "b"],
}
_SCOPES: list[dict[str, Any]] = [
    {"params": _PARAMS, "steps": {"first": {"_id": "1x2"}}, "now": NOW},
    {"params": {**_PARAMS, "name": None, "email": 7, "text": ["x"], "obj": "text"}},
    {"params": None},
    {"params": ["a", "b"]},
    {"params": "text"},
    {},
]
LOOKUP_EXPRESSIONS = [
    "params.name", "params.name | lower", "params.email | lower", "params.name | upper | trim",
    "params.name | trim('A ')", "params.name | trim(chars=' Ada')", "params['text'] | title",
    "params.missing | default('x')", "params.none | default('x')",
    "params.none | default('x', true)", "params.empty | d('x', boolean=true)",
    "params.zero | default(default_value=5, boolean=true)", "params.flag | default('no')",
    "params.plan | default('free', true) | upper", "params.none | string | default('x', true)",
    "params.name | trim | length", "params.n | abs", "params.text | abs",
    "params.digits | int", "params.text | int(7)", "params.digits | int(base=16)",
    "params.n | float", "params.price | round(1, 'floor')", "params.price | round",
    "params.items | length", "params.items | count", "params.words | join(', ')",
    "params.items | join('-')", "params.text | replace('l', 'L')",
    "params.text | replace('l', 'L', 1)", "params.text | capitalize", "params.text | wordcount",
    "params.none | string", "params.none | lower", "params.when | format_date('%Y')",
    "params.when | date", "params.text | format_date", "params.digits | parse_date",
    "params.obj | tojson", "params.obj.a.b | default('nil', true)", "params.obj.items",
    "params.obj.items | upper", "params.obj.values | string", "params.sub.items | string",
    "params.odd.__class__", "params.__class__", "params.sub.x | upper", "params.items.x | lower",
    "params.text.upper | string", "params.injected | lower", "steps.first._id | upper",
    "steps.other._id | upper", "missing_name | lower", "range | default(1)",
    "now | format_date", "params.obj['a']['b'] | default('z', true)",
]
NOT_LOOKUP_EXPRESSIONS = [
    "params.text | replace(*params.words)", "params.text | default(params.name)",
    "params.text | center(20)", "params.items | first", "params.text | default(['x'] | first)",
    "params.items[0] | string", "params.name ~ '!'", "params.name | lower == 'ada'",
]
TEXT_TEMPLATES = [
    "Hello {{ params.name }}", "Hello {{ params.name | trim }}!",
    "{{ params.name | trim }} <{{ params.email | default('none', true) | lower }}>",
    "{{ params.missing | default('-') }} x", "n={{ params.none | upper }}",
    "{{ params.words | join('-') }}/{{ params.n | float }}", "x {{ params.obj }}",
    "{{ params.text | replace('o', '0') }}\n", "got {{ params.injected | upper }}",
    "{{ params.sub.x | upper }}.", "at {{ params.when }}, {{ params.items }}",
    "{{ params.missing | lower }}.", "{{ missing_name }}-",
    "{{ params.when | format_date('%d/%m') }} at {{ now | format_date('%H:%M') }}",
    "{{ params.items | length }} items{% if params.flag %}!{% endif %}",
]


def _jinja(text: str, scope: dict[str, Any]) -> tuple[str, Any]:
    """What Jinja itself makes of a template: ("value", result) or ("error", message)."""
    expression = lone_expression(text)
    try:
        if expression is None:
            return "value", ENV.from_string(text).render(scope)
        value = ENV.compile_expression(expression, undefined_to_none=False)(**scope)
    except (UndefinedError, SecurityError, TypeError, ValueError, ArithmeticError,
            LookupError, AttributeError) as exc:
        return "error", f"{text.strip()}: {exc}"
    if isinstance(value, Undefined):
        return "error", None  # the gateway refuses an undefined result, in its own words
    return "value", value


def _ours(text: str, scope: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "value", compile_source(parse(text))(scope)
    except TemplateError as exc:
        return "error", exc.message


@pytest.mark.parametrize("text", [
    *(f"{{{{ {e} }}}}" for e in LOOKUP_EXPRESSIONS + NOT_LOOKUP_EXPRESSIONS),
    *TEXT_TEMPLATES,
])
def test_lookups_give_what_jinja_gives(text: str) -> None:
    for scope in _SCOPES:
        expected = _jinja(text, scope)
        got = _ours(text, scope)
        assert got[0] == expected[0], (scope, got, expected)
        if expected[0] == "error":
            assert expected[1] is None or got[1] == expected[1], (scope, got, expected)
        else:
            assert got[1] == expected[1] and type(got[1]) is type(expected[1]), (scope, got)


@pytest.mark.parametrize("text", [*(f"{{{{ {e} }}}}" for e in LOOKUP_EXPRESSIONS),
                                  *TEXT_TEMPLATES])
def test_lookups_spend_what_jinja_spends(text: str) -> None:
    """Every filter a lookup calls goes through the sandbox's guard, as on Jinja's path: the
    same budget spent for the same answer."""
    for scope in _SCOPES:
        with budget.bounded() as jinja:
            expected = _jinja(text, scope)
        with budget.bounded() as ours:
            got = _ours(text, scope)
        if expected[0] == "value":
            assert ours.left == jinja.left, (scope, got)


@pytest.mark.parametrize("text", ["{{ params.text | upper }}", "{{ params.text | trim }}!",
                                  "x {{ params.text }}", "{{ params.words | join }}"])
def test_lookups_keep_the_sandboxs_size_limits(text: str) -> None:
    render = compile_source(parse(text))
    scope = {"params": {"text": "a" * 20, "words": ["a" * 10, "b" * 10]}}
    assert "a" * 10 in render(scope).lower()
    with budget.bounded(budget.Limits(max_bytes=16)), \
            pytest.raises(TemplateError, match="limits.max_template_bytes"):
        render(scope)


@pytest.mark.parametrize("expression", LOOKUP_EXPRESSIONS)
def test_everyday_expressions_are_lookups(expression: str) -> None:
    assert compile_lookup(_expression_node(expression)) is not None


@pytest.mark.parametrize("expression", NOT_LOOKUP_EXPRESSIONS)
def test_other_expressions_are_left_to_jinja(expression: str) -> None:
    assert compile_lookup(_expression_node(expression)) is None


def test_only_a_whole_expression_is_taken() -> None:
    assert _expression_node("params.name") is not None
    assert _expression_node("params.name params.email") is None
    assert _expression_node("params.name |") is None


def test_text_templates_of_lookups_render_by_concatenation() -> None:
    assert lookup_parts(parse("{{ params.name | trim }} <{{ params.email | lower }}>").ast)
    assert lookup_parts(parse("{{ params.items | first }}").ast) is None
    assert lookup_parts(parse("{% if params.flag %}x{% endif %}").ast) is None
