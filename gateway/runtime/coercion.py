"""Parameter coercion, compiled once per workflow.

Checking each request against a JSON Schema costs more than the rest of a trivial run, so
each workflow gets a plain function instead: one converter per declared parameter, applied
to whatever arrived (JSON values, or text from a form, the query string or the command line).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.core.errors import InvalidDataError, MissingDataError
from gateway.files.uploads import file_value
from gateway.runtime.param import Param
from gateway.storage.common.geo import address_value
from gateway.storage.contract import OptionSet
from gateway.templates.environment import parse_date

Convert = Callable[[Any], Any]
Coercer = Callable[[Mapping[str, Any]], dict[str, Any]]

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str) and value.strip().isascii():  # not '１２３' (int() takes it)
        number = float(value.strip())
    else:
        raise ValueError
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError
    return number


def _integer(value: Any) -> int:
    if isinstance(value, str):
        value = value.strip()
        digits = value.lstrip("+-")
        if digits.isdigit() and digits.isascii():
            return _in_float_range(int(value))
        return _integer(_number(value))
    number = _number(value)
    if isinstance(number, float) and not number.is_integer():
        raise ValueError
    return int(number)


def _in_float_range(number: int) -> int:
    float(number)  # OverflowError beyond it: no larger number arrives in a JSON body either
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError


def _date(value: Any) -> datetime:
    if isinstance(value, bool):
        raise ValueError
    return parse_date(value)


def _object(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise ValueError
    return value


def record_id(value: Any) -> str:
    # A record arrives as its id; whether the record exists is checked against the store.
    if isinstance(value, dict) and isinstance(value.get("_id"), str):
        return str(value["_id"])
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError


CONVERTERS: dict[str, Convert] = {
    "text": _text, "number": _number, "integer": _integer, "boolean": _boolean,
    "date": _date, "object": _object, "geographic_address": address_value,
    "file": file_value, "image": file_value,
}


def converter(type_name: str, options: OptionSet | None = None) -> Convert:
    """The converter for a declared type (a data type's name converts to a record id, an
    option set's to one of its options)."""
    if options is not None:
        return options.find
    return CONVERTERS.get(type_name, record_id)


_FAILURES = (ValueError, TypeError, OverflowError, RecursionError, OSError)


def convert_value(value: Any, type_name: str, is_list: bool = False,
                  options: OptionSet | None = None) -> Any:
    """`value` in a declared type: a list of it when `is_list` (and then `value` must be a
    list). Raises `ValueError` whatever the converter met."""
    convert = converter(type_name, options)
    try:
        if options is not None and is_list:
            return options.find_all(value)
        if not is_list:
            return convert(value)
        if not isinstance(value, list):
            raise ValueError("not a list")
        return [convert(item) for item in value]
    except _FAILURES as exc:
        raise ValueError(str(exc)) from exc


def typed_or_as_is(value: Any, type_name: str, is_list: bool = False,
                   options: OptionSet | None = None) -> Any:
    """A declared default in its type; one that does not convert (the compiler reports it)
    is kept as written."""
    if value is None:
        return None
    try:
        return convert_value(value, type_name, is_list, options)
    except ValueError:
        return value


def _options_listed(options: OptionSet) -> Convert:
    def convert_list(value: Any) -> list[Any]:
        return options.find_all(_text_list(value) if isinstance(value, str) else value)

    return convert_list


def _plan(param: Param) -> Convert:
    if param.options is not None and param.list:
        return _options_listed(param.options)
    return (_listed if param.list else _single)(converter(param.type, param.options))


def _listed(convert: Convert) -> Convert:
    def convert_list(value: Any) -> list[Any]:
        if isinstance(value, str):
            value = _text_list(value)
        if not isinstance(value, list):
            raise ValueError
        return [convert(item) for item in value]

    return convert_list


def _text_list(value: str) -> Any:
    """A list sent as text: a JSON array, or else a single item (`[urgent] call back`)."""
    if value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return [value]


# Converters that refuse a list by themselves: a single value needs no check of its own.
_REFUSE_LISTS = frozenset({_text, _number, _integer, _boolean, _object, record_id,
                           address_value, file_value})


def _single(convert: Convert) -> Convert:
    if convert in _REFUSE_LISTS:
        return convert

    def convert_one(value: Any) -> Any:
        if isinstance(value, list):
            raise ValueError
        return convert(value)

    return convert_one


def gather(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Key-value pairs (a form, a query string, `--param`s) as raw parameters: a key given
    more than once becomes a list of its values."""
    grouped: dict[str, list[Any]] = {}
    for key, value in items:
        grouped.setdefault(key, []).append(value)
    return {key: values[0] if len(values) == 1 else values for key, values in grouped.items()}


def compile_coercer(workflow: str, params: Sequence[Param]) -> Coercer:
    """A function from raw values to declared, typed values; raises `MissingDataError` or
    `InvalidDataError` naming the parameter and, for the latter, the expected type."""
    plan = [(p, _plan(p)) for p in params]
    defaults = {p.name: typed_or_as_is(p.default, p.type, p.list, p.options) for p in params
                if p.has_default}

    def coerce(raw: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for param, convert in plan:
            value = raw.get(param.name)
            if value is None or value == "":  # empty text is no value, for every type
                if param.has_default:
                    default = defaults[param.name]
                    result[param.name] = copy.deepcopy(default) if isinstance(
                        default, (dict, list)) else default
                elif param.optional:
                    result[param.name] = [] if param.list else None
                else:
                    raise MissingDataError(
                        f"Missing parameter for workflow {workflow}: parameter {param.name}")
                continue
            try:
                result[param.name] = convert(value)
            except _FAILURES as exc:
                raise InvalidDataError(
                    f"Invalid value for parameter {param.name} (must be {param.describe()})"
                ) from exc
        return result

    return coerce
