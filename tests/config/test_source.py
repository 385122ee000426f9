"""Strict YAML with positions: where each value and key stands, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.source import Document, load_file, load_text
from gateway.core.errors import Diagnostic


def _one(text: str) -> Document:
    documents, problems, _ = load_text(text, "f.yaml")
    assert problems == []
    assert len(documents) == 1
    return documents[0]


def _problems(text: str) -> list[tuple[int, int, str, str]]:
    return [(d.line, d.column, d.code, d.pointer) for d in load_text(text, "f.yaml")[1]]


NESTED = """\
kind: api_workflow
name: nested
steps:
  - action: set
    values:
      list: [10, {deep: yes}]
      block:
        - first
        -   second
"""


@pytest.mark.parametrize(("pointer", "position"), [
    ("", (1, 1)),
    ("/kind", (1, 7)),
    ("/steps", (4, 3)),
    ("/steps/0", (4, 5)),
    ("/steps/0/action", (4, 13)),
    ("/steps/0/values", (6, 7)),
    ("/steps/0/values/list", (6, 13)),
    ("/steps/0/values/list/0", (6, 14)),
    ("/steps/0/values/list/1/deep", (6, 25)),
    ("/steps/0/values/block/0", (8, 11)),
    ("/steps/0/values/block/1", (9, 13)),
])
def test_positions_of_nested_values(pointer: str, position: tuple[int, int]) -> None:
    assert _one(NESTED).locate(pointer) == position


@pytest.mark.parametrize(("pointer", "position"), [
    ("/kind", (1, 1)),
    ("/steps/0/action", (4, 5)),
    ("/steps/0/values/list", (6, 7)),
    ("/steps/0/values/list/1/deep", (6, 19)),
])
def test_positions_of_keys(pointer: str, position: tuple[int, int]) -> None:
    assert _one(NESTED).locate(pointer, key=True) == position


def test_values_keep_their_yaml_types_and_dates_stay_text() -> None:
    doc = _one("kind: x\na: 1\nb: 1.5\nc: true\nd: null\ne: 2024-01-31\nf: '007'\n")
    assert doc.data == {"kind": "x", "a": 1, "b": 1.5, "c": True, "d": None,
                        "e": "2024-01-31", "f": "007"}


def test_an_unknown_pointer_falls_back_to_its_nearest_located_ancestor() -> None:
    doc = _one(NESTED)
    assert doc.locate("/steps/0/values/missing/deeper") == doc.locate("/steps/0/values")
    assert doc.locate("/nothing") == (1, 1)


def test_block_scalars_are_located_at_their_indicator() -> None:
    doc = _one("kind: x\nmessage: |\n  line one\n  line two\nfolded: >-\n  a\n  b\n")
    assert doc.data["message"] == "line one\nline two\n"
    assert doc.data["folded"] == "a b"
    assert doc.locate("/message") == (2, 10)
    assert doc.locate("/folded") == (5, 9)


def test_flow_mappings_locate_each_key_and_value() -> None:
    doc = _one('kind: x\nparams: {name: {type: text}, "odd/key~": {type: date}}\n')
    assert doc.locate("/params/name/type") == (2, 23)
    assert doc.locate("/params/odd~1key~0", key=True) == (2, 30)
    assert doc.locate("/params/odd~1key~0/type") == (2, 49)


def test_documents_of_one_file_keep_file_lines() -> None:
    text = "kind: a\n---\n# comment\nkind: b\nname: n\n---\nkind: c\n"
    documents, problems, _ = load_text(text, "f.yaml")
    assert problems == []
    assert [(d.index, d.data["kind"], d.locate("/kind")) for d in documents] == [
        (0, "a", (1, 7)), (1, "b", (4, 7)), (2, "c", (7, 7))]
    assert documents[1].locate("/name") == (5, 7)


def test_anchors_and_aliases_give_the_same_data_and_the_anchor_position() -> None:
    doc = _one("kind: x\nbase: &b {a: 1}\ncopy: *b\n")
    assert doc.data["copy"] == {"a": 1}
    assert doc.locate("/copy/a") == (2, 14)


def test_merge_keys_merge_and_explicit_keys_win() -> None:
    doc = _one("kind: x\nbase: &b {a: 1, b: 2}\nmerged:\n  <<: *b\n  b: 3\n")
    assert doc.data["merged"] == {"a": 1, "b": 3}
    assert doc.locate("/merged/a") == (2, 14)
    assert doc.locate("/merged/b") == (5, 6)


def test_merge_key_list_earlier_sources_win() -> None:
    doc = _one("kind: x\none: &one {a: 1}\ntwo: &two {a: 2, b: 2}\nm:\n  <<: [*one, *two]\n")
    assert doc.data["m"] == {"a": 1, "b": 2}


def test_merge_key_after_explicit_keys_keeps_their_positions() -> None:
    doc = _one("kind: x\nbase: &b {a: 1, b: 2}\nmerged:\n  b: 3\n  <<: *b\n")
    assert doc.data["merged"] == {"a": 1, "b": 3}
    assert doc.locate("/merged/b") == (4, 6)


# --- what is refused --------------------------------------------------------------------------


def test_duplicate_keys_at_any_depth() -> None:
    assert _problems("kind: x\na: {b: 1, b: 2}\nkind: y\n") == [
        (2, 11, "yaml.duplicate-key", "/a/b"), (3, 1, "yaml.duplicate-key", "/kind")]


def test_a_duplicate_key_message_names_the_first_line() -> None:
    problem = load_text("kind: x\nname: a\n\nname: b\n", "f.yaml")[1][0]
    assert problem.message == "duplicate key 'name' (first defined on line 2)"


@pytest.mark.parametrize(("key", "shown"), [
    ("on", "true"), ("yes", "true"), ("off", "false"), ("1", "1"), ("~", "null"),
])
def test_keys_yaml_reads_as_something_else_than_text(key: str, shown: str) -> None:
    problems = load_text(f"kind: x\nsub:\n  {key}: 1\n", "f.yaml")[1]
    assert problems == [Diagnostic(
        "f.yaml", 3, 3, "yaml.non-string-key",
        f"key {key!r} is not a string (YAML reads it as {shown}); quote it", "/sub")]


def test_quoted_keys_are_text() -> None:
    assert _one("kind: x\n'on': 1\n\"yes\": 2\n").data == {"kind": "x", "on": 1, "yes": 2}


def test_a_document_with_yaml_problems_goes_no_further() -> None:
    documents, problems, _ = load_text("kind: x\nkind: y\n---\nkind: z\n", "f.yaml")
    assert [d.data["kind"] for d in documents] == ["z"]
    assert [p.code for p in problems] == ["yaml.duplicate-key"]


def test_what_a_dropped_document_declares_is_told_when_it_can_be_read() -> None:
    text = ("kind: settings\nsmtp: {}\nsmtp: {}\n---\n"  # a settings document's name is ""
            "kind: api_workflow\nname: later\nsteps: [{1: typo}]\n---\n"
            "kind: data_type\nname: !env TYPE\n---\n"  # its name cannot be read
            "kind: custom_event\nname: fine\n---\n"  # not dropped
            "kind: x\nname: [a, b]\nkind: y\n")
    documents, problems, dropped = load_text(text, "f.yaml")
    assert [d.data["name"] for d in documents] == ["fine"]
    assert len(problems) == 4
    assert dropped == [("settings", ""), ("api_workflow", "later")]


@pytest.mark.parametrize(("text", "position"), [
    ("kind: x\n  bad: indent\n", (2, 6)),
    ("kind: [a, b\n", (2, 1)),
    ("kind: x\n\tname: tab\n", (2, 1)),
])
def test_syntax_errors_are_located(text: str, position: tuple[int, int]) -> None:
    documents, problems, _ = load_text(text, "f.yaml")
    assert documents == []
    assert [(p.line, p.column, p.code) for p in problems] == [(*position, "yaml.syntax")]


def test_an_unclosed_quote_says_where_it_opened() -> None:
    problem = load_text('kind: x\nmessage: "open\nname: y\n', "f.yaml")[1][0]
    assert "line 2" in problem.message and "column 10" in problem.message


def test_unknown_tags_are_refused_and_standard_ones_accepted() -> None:
    assert _problems("kind: x\na: !env HOME\nb: !!str 5\n") == [
        (2, 4, "yaml.unknown-tag", "/a")]
    assert _one("kind: x\nb: !!str 5\nc: !!int '7'\n").data == {"kind": "x", "b": "5", "c": 7}


def test_a_merge_key_takes_mappings_only() -> None:
    assert _problems("kind: x\na:\n  <<: 5\n") == [(3, 7, "yaml.bad-merge", "/a")]


def test_documents_that_are_not_mappings() -> None:
    assert _problems("- a\n---\ntext\n---\n42\n") == [
        (1, 1, "yaml.not-a-mapping", ""), (3, 1, "yaml.not-a-mapping", ""),
        (5, 1, "yaml.not-a-mapping", "")]


def test_an_empty_file_or_comments_only_has_no_documents() -> None:
    assert load_text("", "f.yaml") == ([], [], [])
    assert load_text("# nothing here\n", "f.yaml") == ([], [], [])


@pytest.mark.parametrize("text", ["kind: x\n---\n", "---\nkind: x\n---\n# later\n"])
def test_empty_documents_are_skipped(text: str) -> None:
    documents, problems, _ = load_text(text, "f.yaml")
    assert (len(documents), problems) == (1, [])


def test_unreadable_files_are_diagnostics(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"kind: \xff\n")
    documents, problems, _ = load_file(path, "shown.yaml")
    assert documents == []
    assert [(p.file, p.line, p.column, p.code) for p in problems] == [
        ("shown.yaml", 1, 1, "file.unreadable")]


def test_a_missing_file_is_a_diagnostic(tmp_path: Path) -> None:
    problems = load_file(tmp_path / "gone.yaml")[1]
    assert [p.code for p in problems] == ["file.unreadable"]
