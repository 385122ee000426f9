"""Names that would meet on the wire: two fields with one display always; a display that
is another field's key or a system field's only when the settings ask for display keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.compiler.loader import load
from gateway.core.errors import ConfigError

TYPE = """\
kind: data_type
name: unit
fields:
  first_name: {type: text, display: First Name}
  rent: {type: number}
  monthly: {type: number, display: rent}
  created: {type: date, display: Created Date}
"""


def problems(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    path = tmp_path / "types.yaml"
    path.write_text(text)
    try:
        load([path])
    except ConfigError as exc:
        return [(d.code, d.pointer) for d in exc.diagnostics]
    return []


def test_a_display_meeting_a_name_is_fine_while_fields_are_keyed_by_name(
        tmp_path: Path) -> None:
    assert problems(tmp_path, TYPE) == []


@pytest.mark.parametrize("setting", ["data_api", "workflow_api"])
def test_with_display_keys_a_display_meeting_another_key_is_reported(
        tmp_path: Path, setting: str) -> None:
    text = TYPE + f"---\nkind: settings\n{setting}: {{display_keys: true}}\n"
    assert problems(tmp_path, text) == [
        ("data_type.key-clash", "/fields/monthly/display"),
        ("data_type.key-clash", "/fields/created/display")]


def test_two_fields_with_one_display_are_reported_whatever_the_settings(
        tmp_path: Path) -> None:
    text = TYPE + "  given_name: {type: text, display: First Name}\n"
    assert problems(tmp_path, text) == [("data_type.key-clash", "/fields/given_name/display")]


def test_a_display_and_a_name_make_one_url(tmp_path: Path) -> None:
    text = ("kind: data_type\nname: rental_unit\ndisplay: Rental Unit\napi: {expose: true}\n"
            "---\nkind: data_type\nname: rentalunit\napi: {expose: true}\n"
            "---\nkind: data_type\nname: rental\ndisplay: rental_unit\n")
    assert problems(tmp_path, text) == [("data_api.name-clash", "/api/expose")]
