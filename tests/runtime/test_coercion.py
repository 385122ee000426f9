"""Parameter converters and the compiled coercer, directly, with their edge cases."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.core.errors import InvalidDataError, MissingDataError
from gateway.runtime.coercion import compile_coercer, converter
from gateway.runtime.param import Param

UTC = timezone.utc


def convert(type_name: str, value: Any) -> Any:
    return converter(type_name)(value)


@pytest.mark.parametrize(("value", "expected"), [
    ("hello", "hello"), ("", ""), ("  spaced  ", "  spaced  "), (3, "3"), (2.5, "2.5"),
    ("{{ 7*7 }}", "{{ 7*7 }}"),
])
def test_text(value: Any, expected: str) -> None:
    assert convert("text", value) == expected


@pytest.mark.parametrize("value", [True, False, None, {"a": 1}, [1]])
def test_text_refuses(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        convert("text", value)


@pytest.mark.parametrize(("value", "expected"), [
    (3, 3), (2.5, 2.5), ("2.5", 2.5), (" 7 ", 7.0), ("-1e3", -1000.0), ("0", 0.0), (0, 0),
])
def test_number(value: Any, expected: float) -> None:
    result = convert("number", value)
    assert result == expected and not isinstance(result, bool)


@pytest.mark.parametrize("value", [
    True, False, "NaN", "nan", "inf", "-Infinity", float("nan"), float("inf"), "1e400", "abc",
    "", "1,5", None, [1], {"a": 1},
])
def test_number_refuses(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        convert("number", value)


@pytest.mark.parametrize(("value", "expected"), [
    (3, 3), ("3", 3), ("3.0", 3), (3.0, 3), (" -4 ", -4), ("+5", 5), ("1e3", 1000),
    ("123456789012345678901234567890", 123456789012345678901234567890),
])
def test_integer(value: Any, expected: int) -> None:
    result = convert("integer", value)
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value", [
    True, False, "3.5", 3.5, "NaN", "1e400", "three", "", "0x10", None, [3],
])
def test_integer_refuses(value: Any) -> None:
    with pytest.raises((ValueError, TypeError, OverflowError)):
        convert("integer", value)


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), ("true", True), ("false", False), ("yes", True), ("no", False),
    ("YES", True), (" No ", False), ("1", True), ("0", False), ("on", True), ("off", False),
])
def test_boolean(value: Any, expected: bool) -> None:
    assert convert("boolean", value) is expected


@pytest.mark.parametrize("value", ["maybe", "", "y", "2", None, [True], {"a": True}])
def test_boolean_refuses(value: Any) -> None:
    with pytest.raises(ValueError):
        convert("boolean", value)


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("2024-05-01T12:00:00-07:00", datetime(2024, 5, 1, 19, tzinfo=UTC)),
    ("2024-05-01T00:30:00+01:00", datetime(2024, 4, 30, 23, 30, tzinfo=UTC)),
    (0, datetime(1970, 1, 1, tzinfo=UTC)),
])
def test_date_is_aware_utc(value: Any, expected: datetime) -> None:
    result = convert("date", value)
    assert result == expected
    assert result.utcoffset() == timedelta(0)
    assert result.tzinfo is not None


@pytest.mark.parametrize("value", [True, "tomorrow", "2024-02-30", "", None, [2024], {"y": 1}])
def test_date_refuses(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        convert("date", value)


@pytest.mark.parametrize(("value", "expected"), [
    ({"a": 1}, {"a": 1}), ('{"a": [1, null]}', {"a": [1, None]}), ({}, {}),
])
def test_object(value: Any, expected: dict[str, Any]) -> None:
    assert convert("object", value) == expected


@pytest.mark.parametrize("value", ["[1]", "null", "text", 3, [{"a": 1}], True])
def test_object_refuses(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        convert("object", value)


@pytest.mark.parametrize(("value", "expected"), [
    ("1714557600000x123", "1714557600000x123"), ("  abc  ", "abc"),
    ({"_id": "r1", "name": "x"}, "r1"),
])
def test_record_id(value: Any, expected: str) -> None:
    assert convert("lead", value) == expected


@pytest.mark.parametrize("value", ["", "   ", 5, None, {"name": "x"}, {"_id": 5}, ["a"]])
def test_record_id_refuses(value: Any) -> None:
    with pytest.raises(ValueError):
        convert("lead", value)


# --- the compiled coercer ---------------------------------------------------------------------

PARAMS = (
    Param("name", "text"),
    Param("count", "integer", optional=True, default=3, has_default=True),
    Param("note", "text", optional=True),
    Param("flags", "boolean", list=True, optional=True),
    Param("nums", "number", list=True, optional=True),
    Param("tags", "text", list=True, optional=True, default=["a"], has_default=True),
)
coerce = compile_coercer("wf", PARAMS)


def test_coercer_applies_types_defaults_and_optionals() -> None:
    assert coerce({"name": "x"}) == {"name": "x", "count": 3, "note": None, "flags": [],
                                     "nums": [], "tags": ["a"]}
    assert coerce({"name": "x", "count": "4", "flags": ["yes", False], "nums": "[1, 2.5]",
                   "tags": "solo", "extra": "ignored"}) == {
        "name": "x", "count": 4, "note": None, "flags": [True, False], "nums": [1, 2.5],
        "tags": ["solo"]}


@pytest.mark.parametrize("empty", ["", None])
def test_an_empty_text_is_no_value_for_a_text_as_for_a_number(empty: str | None) -> None:
    assert coerce({"name": "x", "count": ""})["count"] == 3
    with pytest.raises(MissingDataError) as info:
        coerce({"name": empty})
    assert info.value.message == "Missing parameter for workflow wf: parameter name"


@pytest.mark.parametrize(("raw", "message"), [
    ({"name": "x", "count": True}, "Invalid value for parameter count (must be integer)"),
    ({"name": "x", "count": "3.5"}, "Invalid value for parameter count (must be integer)"),
    ({"name": "x", "nums": "[1, NaN]"},
     "Invalid value for parameter nums (must be list of number)"),
    ({"name": "x", "nums": "[1, "}, "Invalid value for parameter nums (must be list of number)"),
    ({"name": "x", "nums": 5}, "Invalid value for parameter nums (must be list of number)"),
    ({"name": "x", "flags": [True, None]},
     "Invalid value for parameter flags (must be list of boolean)"),
    ({"name": ["x", "y"]}, "Invalid value for parameter name (must be text)"),
    ({"name": True}, "Invalid value for parameter name (must be text)"),
])
def test_coercer_names_parameter_and_type(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidDataError) as info:
        coerce(raw)
    assert info.value.message == message
    assert info.value.status == 400 and info.value.code == "INVALID_DATA"


def test_nan_from_a_json_body_is_refused() -> None:
    raw = json.loads('{"name": "x", "nums": [NaN]}')
    assert math.isnan(raw["nums"][0])
    with pytest.raises(InvalidDataError):
        coerce(raw)


def test_lists_from_json_text() -> None:
    ints = compile_coercer("wf", [Param("ids", "integer", list=True)])
    assert ints({"ids": "[1, \"2\", 3.0]"}) == {"ids": [1, 2, 3]}
    assert ints({"ids": "  [ ]"}) == {"ids": []}
    assert ints({"ids": "7"}) == {"ids": [7]}
    objects = compile_coercer("wf", [Param("os", "object", list=True)])
    assert objects({"os": '[{"a": 1}]'}) == {"os": [{"a": 1}]}
    assert objects({"os": ['{"a": 1}', {"b": 2}]}) == {"os": [{"a": 1}, {"b": 2}]}


def test_a_text_list_item_that_merely_starts_with_a_bracket() -> None:
    texts = compile_coercer("wf", [Param("tags", "text", list=True)])
    assert texts({"tags": "[urgent] call back"}) == {"tags": ["[urgent] call back"]}


def test_a_date_default_is_a_date() -> None:
    dated = compile_coercer("wf", [Param("when", "date", optional=True, default="2024-05-01",
                                         has_default=True)])
    assert dated({}) == {"when": datetime(2024, 5, 1, tzinfo=UTC)}


def test_a_date_given_is_a_date() -> None:
    dated = compile_coercer("wf", [Param("when", "date", optional=True, default="2024-05-01",
                                         has_default=True)])
    assert dated({"when": "2024-06-01"}) == {"when": datetime(2024, 6, 1, tzinfo=UTC)}


def test_record_params_coerce_to_ids() -> None:
    records = compile_coercer("wf", [Param("lead", "lead"), Param("many", "lead", list=True)])
    assert records({"lead": {"_id": "r1"}, "many": ["r2", {"_id": "r3"}]}) == {
        "lead": "r1", "many": ["r2", "r3"]}
    with pytest.raises(InvalidDataError) as info:
        records({"lead": 5, "many": []})
    assert info.value.message == "Invalid value for parameter lead (must be lead)"
