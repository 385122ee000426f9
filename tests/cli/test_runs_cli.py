"""`gateway runs list` filters (workflow, status, source, time, text) and `gateway runs show`
as a timeline, on both databases; both with `--json`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import served

from gateway.cli import main

CONFIG = """\
kind: api_workflow
name: greet
expose: true
auth: none
params: {name: {type: text}}
steps:
  - id: hello
    action: set
    values: {text: "hello {{ params.name }}"}
  - action: fail
    only_when: "{{ params.name == 'Mallory' }}"
    status: 403
    code: NOPE
    message: not you
  - action: return_data
    data: {greeting: "{{ steps.hello.text }}"}
---
kind: api_workflow
name: other
expose: true
auth: none
steps:
  - action: terminate
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "main.yaml").write_text(CONFIG)
    return folder


async def call(folder: Path, database: str, *calls: tuple[str, dict[str, object]]) -> None:
    async with served(folder, database) as gateway:
        for name, body in calls:
            await gateway.client.post(f"/api/1.1/wf/{name}", json=body)


@pytest.fixture
def logged(folder: Path, storage_url: str) -> str:
    """A database whose run log holds runs of several workflows, statuses and sources."""
    asyncio.run(call(folder, storage_url, ("greet", {"name": "Ada"}), ("greet", {"name": "Bob"}),
                     ("greet", {"name": "Mallory"}), ("greet", {}), ("other", {})))
    return storage_url


def cli(folder: Path, database: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(folder), "--database", database])


def listed(folder: Path, database: str, *args: str) -> list[dict[str, object]]:
    result = cli(folder, database, "runs", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_filters(folder: Path, logged: str) -> None:
    ran = CliRunner().invoke(main, ["run", "greet", "-p", "name=Cli", "--config", str(folder),
                                    "--database", logged])
    assert ran.exit_code == 0, ran.output
    assert len(listed(folder, logged)) == 6
    assert {r["workflow"] for r in listed(folder, logged, "--workflow", "other")} == {"other"}
    assert [r["status"] for r in listed(folder, logged, "--status", "failed")] == ["failed"]
    assert len(listed(folder, logged, "--status", "rejected")) == 1  # the missing name
    assert [r["params"] for r in listed(folder, logged, "--source", "cli")] == [
        {"name": "Cli"}]
    assert len(listed(folder, logged, "--source", "http")) == 5
    bob = listed(folder, logged, "--text", "BOB")
    assert [r["params"] for r in bob] == [{"name": "Bob"}]
    assert listed(folder, logged, "--text", "not you")[0]["status"] == "failed"
    assert listed(folder, logged, "--since", "1h", "--until", "1h") == []
    assert len(listed(folder, logged, "--since", "2000-01-01", "--until", "2999-01-01")) == 6
    assert listed(folder, logged, "--until", "2000-01-01T00:00:00+00:00") == []
    assert len(listed(folder, logged, "--limit", "2")) == 2
    assert listed(folder, logged, "--text", "%") == []  # no wildcard: a literal percent sign
    assert listed(folder, logged, "--text", "'; DROP TABLE gateway_runs; --") == []
    text = cli(folder, logged, "runs", "list", "--status", "failed")
    assert text.exit_code == 0
    assert " failed " in text.output and "NOPE: not you" in text.output


@pytest.mark.parametrize("args", [["--since", "yesterday"], ["--until", "1x"],
                                  ["--text", ""], ["--text", "a\nb"], ["--text", "x" * 1001],
                                  ["--limit", "0"], ["--limit", "100000"]])
def test_bad_filters_are_usage_errors(folder: Path, logged: str, args: list[str]) -> None:
    result = cli(folder, logged, "runs", "list", *args)
    assert result.exit_code == 2, result.output


def test_show_prints_a_timeline(folder: Path, logged: str) -> None:
    (failed,) = listed(folder, logged, "--status", "failed")
    result = cli(folder, logged, "runs", "show", str(failed["id"]))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"run {failed['id']}  greet  failed  ")
    assert lines[0].endswith("(http, anonymous)")
    assert lines[2] == 'params    {"name":"Mallory"}'
    assert lines[3].startswith("error     NOPE: not you")
    assert lines[4] == "steps     2"
    first, second = lines[5], lines[6]
    assert first.split()[:6] == ["0.00", "ms", "1.", "hello", "set", "success"]
    assert second.split()[2:6] == ["2.", "-", "fail", "failed"]
    assert lines[7].strip() == "reason: not you"
    as_json = cli(folder, logged, "runs", "show", str(failed["id"]), "--json")
    assert json.loads(as_json.output)["steps"][1]["status"] == "failed"


def test_caller_text_cannot_forge_lines_in_the_timeline(folder: Path, logged: str) -> None:
    asyncio.run(call(folder, logged, ("greet", {"name": "x\nerror     FORGED"})))
    (run,) = listed(folder, logged, "--text", "FORGED")
    shown = cli(folder, logged, "runs", "show", str(run["id"]))
    assert not any(line.startswith("error") for line in shown.output.splitlines())
