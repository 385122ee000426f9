"""`gateway test`: workflow tests run in-process on a throwaway database, failures located
to their case, a JUnit report for CI; and the tests of workflows.d/ and of every folder of
examples/ pass."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner
from support import WORKFLOWS_D, example_folders

from gateway.cli import main
from gateway.compiler.loader import load
from gateway.server.workflow_tests import subset_mismatch

SHIPPED = [WORKFLOWS_D, *example_folders()]
by_name = pytest.mark.parametrize("folder", SHIPPED, ids=lambda folder: folder.name)

ECHO = """\
kind: api_workflow
name: echo
expose: true
auth: none
params:
  word: {type: text}
  times: {type: integer, optional: true, default: 1}
steps:
  - action: return_data
    data: {word: "{{ params.word }}", times: "{{ params.times }}", tags: [a, b]}
---
kind: api_workflow
name: secret
expose: true
auth: admin
steps:
  - action: return_data
    data: {ok: true}
"""


def write(tmp_path: Path, tests: str) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "echo.yaml").write_text(ECHO)
    (folder / "echo_test.yaml").write_text(tests)
    return folder


def test_there_are_examples_beside_workflows_d() -> None:
    assert {folder.name for folder in example_folders()} >= {
        "stripe-webhooks", "github-webhooks", "exchange-rates", "rentals", "crm-sync"}


@by_name
def test_every_example_passes_its_tests(folder: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    result = CliRunner().invoke(main, ["test", str(folder), "--junit", str(report)])
    assert result.exit_code == 0, result.output
    assert " 0 failed" in result.output
    cases = sum(len(test.cases) for test in load([folder]).tests.values())
    root = ElementTree.parse(report).getroot()
    assert root.get("failures") == "0" and int(root.get("tests") or 0) == cases > 0
    if folder == WORKFLOWS_D:
        assert cases >= 20


@by_name
def test_every_exposed_example_has_a_workflow_test(folder: Path) -> None:
    registry = load([folder])
    tested = {case.workflow for test in registry.tests.values() for case in test.cases}
    assert {wf.name for wf in registry.exposed()} <= tested


def test_a_failure_is_located_with_expected_and_got(tmp_path: Path) -> None:
    folder = write(tmp_path, """\
kind: workflow_test
workflow: echo
cases:
  - name: passes
    params: {word: hi}
    expect: {status: 200, response: {word: hi, tags: [a, b]}}
  - name: wrong word
    params: {word: hi, times: 2}
    expect: {status: 200, response: {word: ho, times: 2}}
  - name: wrong status and code
    params: {}
    expect: {status: 200, code: INVALID_DATA}
  - name: an admin key opens the admin workflow
    workflow: secret
    as: admin
    expect: {status: 200, response: {ok: true}}
  - name: a user's token does not
    workflow: secret
    as: user
    expect: {status: 403, code: FORBIDDEN}
""")
    report = tmp_path / "junit.xml"
    result = CliRunner().invoke(main, ["test", str(folder), "--junit", str(report)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    test_file = folder / "echo_test.yaml"
    assert f"{test_file}:7: FAIL echo: wrong word" in lines
    assert "    response.word: expected \"ho\", got \"hi\"" in lines
    assert f"{test_file}:10: FAIL echo: wrong status and code" in lines
    assert any(line.startswith("    status: expected 200, got 400 (") for line in lines)
    assert any(line.startswith("    code: expected INVALID_DATA, got MISSING_DATA")
               for line in lines)
    assert "passes" not in result.output
    assert lines[-1] == "3 passed, 2 failed (1 test(s))"
    root = ElementTree.parse(report).getroot()
    (suite,) = root.findall("testsuite")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("echo", "5", "2")
    failures = [case for case in suite if case.find("failure") is not None]
    assert [case.get("name") for case in failures] == ["wrong word", "wrong status and code"]
    assert failures[0].get("line") == "7"


def test_each_test_gets_a_fresh_database(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "things.yaml").write_text("""\
kind: data_type
name: thing
fields: {name: {type: text, unique: true}}
---
kind: api_workflow
name: make
expose: true
auth: none
params: {name: {type: text}}
steps:
  - {action: create_thing, type: thing, fields: {name: "{{ params.name }}"}}
---
kind: workflow_test
name: first
workflow: make
cases:
  - {name: makes one, params: {name: x}, expect: {status: 200}}
  - {name: a second is a duplicate, params: {name: x}, expect: {status: 409, code: DUPLICATE}}
---
kind: workflow_test
name: second
workflow: make
cases:
  - name: records made first are there
    records: [{type: thing, fields: {name: y}}]
    params: {name: y}
    expect: {status: 409}
  - {name: the first test's record is not, params: {name: x}, expect: {status: 200}}
""")
    result = CliRunner().invoke(main, ["test", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "4 passed, 0 failed (2 test(s))"


def test_an_invalid_test_is_a_diagnostic_and_nothing_runs(tmp_path: Path) -> None:
    folder = write(tmp_path, """\
kind: workflow_test
workflow: echo
cases:
  - name: no expectation
    params: {word: hi}
""")
    result = CliRunner().invoke(main, ["test", str(folder)])
    assert result.exit_code == 1
    assert "echo_test.yaml:4:5: error[schema.required]" in result.output
    assert "passed" not in result.output


def test_a_config_without_tests_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "echo.yaml").write_text(ECHO)
    result = CliRunner().invoke(main, ["test", str(folder)])
    assert result.exit_code == 1
    assert "no workflow_test documents" in result.output


def test_caller_text_in_names_and_answers_cannot_forge_lines(tmp_path: Path) -> None:
    folder = write(tmp_path, """\
kind: workflow_test
workflow: echo
cases:
  - name: "forged\\nfake.yaml:1: PASS everything"
    params: {word: "x\\ny: PASS"}
    expect: {response: {word: nope}}
""")
    result = CliRunner().invoke(main, ["test", str(folder)])
    assert result.exit_code == 1
    assert not any(line.startswith("fake.yaml") or line.startswith("y: PASS")
                   for line in result.output.splitlines())
    assert "forged\\nfake.yaml" in result.output


def test_a_long_answer_is_cut_in_the_report(tmp_path: Path) -> None:
    folder = write(tmp_path, """\
kind: workflow_test
workflow: echo
cases:
  - name: long
    params: {word: "%s"}
    expect: {status: 500}
""" % ("w" * 100_000))
    result = CliRunner().invoke(main, ["test", str(folder)])
    assert result.exit_code == 1
    assert len(result.output) < 2_000


@pytest.mark.parametrize(("expected", "got", "message"), [
    ({"a": 1}, {"a": 1, "b": 2}, None),
    ({"a": {"b": [1, {"c": 2}]}}, {"a": {"b": [1, {"c": 2, "d": 3}]}}, None),
    ({"a": 1}, {"a": 1.0}, None),
    ({"a": 1}, {"a": True}, "response.a: expected 1, got true"),
    ({"a": [1]}, {"a": [1, 2]}, "response.a: expected [1], got [1,2]"),
    ({"a": None}, {}, "response.a: expected null, got nothing"),
    ("ok", "ok", None),
    ({"a": 1}, "text", 'response: expected an object, got "text"'),
])
def test_subset_matching(expected: object, got: object, message: str | None) -> None:
    assert subset_mismatch(expected, got, "response") == message


def test_a_record_the_database_refuses_fails_its_case_only(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "notes.yaml").write_text("""\
kind: data_type
name: note
fields: {text: {type: text}}
---
kind: api_workflow
name: count
expose: true
auth: none
steps:
  - {id: found, action: search, type: note}
  - {action: return_data, data: {count: "{{ steps.found.count }}"}}
---
kind: workflow_test
workflow: count
cases:
  - name: a NUL character cannot be stored
    records: [{type: note, fields: {text: "a\\0b"}}]
    expect: {status: 200}
  - name: the next case runs all the same
    records: [{type: note, fields: {text: fine}}]
    expect: {status: 200, response: {count: 1}}
""")
    result = CliRunner().invoke(main, ["test", str(folder)])
    assert result.exit_code == 1
    assert "    the case could not run: ValidationError: " in result.output
    assert result.output.splitlines()[-1] == "1 passed, 1 failed (1 test(s))"
