"""The `gateway` command: run, routes, schema, runs list/show, db upgrade, serve, help."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.compiler.loader import load
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.origin import Origin
from gateway.storage import open_storage

CONFIG = """
kind: api_workflow
name: hello
expose: true
auth: none
params:
  name: {type: text}
  times: {type: integer, optional: true, default: 1}
  tags: {type: text, list: true, optional: true}
steps:
  - id: greeting
    action: set
    values: {text: "hello {{ params.name }}"}
  - action: return_data
    data: {greeting: "{{ steps.greeting.text }}", times: "{{ params.times }}",
           tags: "{{ params.tags }}"}
---
kind: api_workflow
name: refuse
expose: true
auth: none
method: GET
steps:
  - action: fail
    status: 403
    code: NOPE
    message: not today
---
kind: api_workflow
name: internal
auth: admin
steps:
  - action: terminate
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows.d"
    folder.mkdir()
    (folder / "main.yaml").write_text(textwrap.dedent(CONFIG).strip())
    return folder


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'x.db'}"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run_workflow(config: Path, database: str, *args: str) -> Result:
    return invoke("run", *args, "--config", str(config), "--database", database)


def test_run_prints_the_response_and_exits_0(config: Path, database: str) -> None:
    result = run_workflow(config, database, "hello", "--param", "name=Ada", "-p", "times=3",
                          "-p", "tags=a", "-p", "tags=b")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"status": "success", "response": {
        "greeting": "hello Ada", "times": 3, "tags": ["a", "b"]}}
    assert "run " in result.stderr and "200" in result.stderr


def test_run_failure_exits_1(config: Path, database: str) -> None:
    result = run_workflow(config, database, "refuse")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"statusCode": 403, "body": {
        "status": "NOPE", "message": "not today"}}
    missing = run_workflow(config, database, "hello")
    assert missing.exit_code == 1
    assert json.loads(missing.stdout)["body"] == {
        "status": "MISSING_DATA", "message": "Missing parameter for workflow hello: parameter name"}


def test_run_can_run_an_unexposed_workflow(config: Path, database: str) -> None:
    result = run_workflow(config, database, "internal")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"status": "success", "response": {}}


@pytest.mark.parametrize("args", [["nope"], ["hello", "--param", "novalue"],
                                  ["hello", "--param", "=x"]])
def test_run_usage_errors_exit_2(config: Path, database: str, args: list[str]) -> None:
    result = run_workflow(config, database, *args)
    assert result.exit_code == 2
    assert "Usage" in result.output or "Error" in result.output


def test_run_is_recorded_in_the_run_log(config: Path, database: str) -> None:
    run = run_workflow(config, database, "hello", "-p", "name=Bo")
    run_id = run.stderr.split("run ", 1)[1].split()[0]
    shown = invoke("runs", "show", run_id, "--json", "--config", str(config), "--database",
                   database)
    assert shown.exit_code == 0, shown.output
    logged = json.loads(shown.stdout)
    assert logged["id"] == run_id and logged["workflow"] == "hello"
    assert logged["source"] == "cli" and logged["status"] == "success"
    assert logged["params"]["name"] == "Bo"
    assert [s["id"] for s in logged["steps"]] == ["greeting", None]
    assert all("duration_ms" in s for s in logged["steps"])


def test_runs_show_unknown_id_exits_1(config: Path, database: str) -> None:
    result = invoke("runs", "show", "123x456", "--config", str(config), "--database", database)
    assert result.exit_code == 1
    assert "123x456" in result.stderr


def test_routes(config: Path) -> None:
    result = invoke("routes", "--config", str(config))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["POST", "/api/1.1/wf/hello"]
    assert lines[1].split()[:2] == ["GET", "/api/1.1/wf/refuse"]
    assert "internal" not in result.stdout
    assert "main.yaml:" in lines[0]


def test_schema_prints_a_valid_json_schema() -> None:
    result = invoke("schema")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(document)
    assert document["$schema"].startswith("https://json-schema.org/draft/2020-12")
    validator = jsonschema.Draft202012Validator(document)
    assert validator.is_valid({"kind": "api_workflow", "name": "x", "auth": "none",
                               "steps": [{"action": "terminate"}]})
    assert not validator.is_valid({"kind": "api_workflow", "name": "x", "auth": "none",
                                   "steps": [{"action": "terminate"}], "unknown_key": 1})


async def _old_runs(config: Path, database: str) -> None:
    """Runs started two hours ago, through the interpreter with an injected clock."""
    registry = load([config])
    storage = open_storage(database)
    await storage.open()
    try:
        old = datetime.now(timezone.utc) - timedelta(hours=2)
        interpreter = Interpreter(registry, storage, clock=lambda: old)
        await interpreter.run(registry.workflows["hello"], {"name": "old"}, origin=Origin("cli"))
        await interpreter.run(registry.workflows["refuse"], {}, origin=Origin("cli"))
        await storage.runs.flush_runs()
    finally:
        await storage.close()


def test_runs_list_with_filters(config: Path, database: str) -> None:
    asyncio.run(_old_runs(config, database))
    for args in (["hello", "-p", "name=a"], ["hello", "-p", "name=b"], ["refuse"],
                 ["hello"]):
        run_workflow(config, database, *args)

    def listed(*filters: str) -> list[dict[str, object]]:
        result = invoke("runs", "list", "--json", *filters, "--config", str(config),
                        "--database", database)
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines()]

    everything = listed()
    assert len(everything) == 6
    started = [str(r["started_at"]) for r in everything]
    assert started == sorted(started, reverse=True)
    assert {r["workflow"] for r in listed("--workflow", "refuse")} == {"refuse"}
    assert len(listed("--workflow", "refuse")) == 2
    assert [r["workflow"] for r in listed("--status", "failed")] == ["refuse", "refuse"]
    assert [r["status"] for r in listed("--status", "rejected")] == ["rejected"]
    recent = listed("--since", "1h")
    assert len(recent) == 4
    assert len(listed("--since", "3h")) == 6
    assert len(listed("--since", "1h", "--status", "failed", "--workflow", "refuse")) == 1
    assert len(listed("--limit", "2")) == 2

    text = invoke("runs", "list", "--status", "failed", "--config", str(config),
                  "--database", database)
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert len(lines) == 2 and all("refuse" in line and "NOPE" in line for line in lines)


@pytest.mark.parametrize("since", ["an hour", "99999999d"])
def test_runs_list_refuses_a_bad_duration(config: Path, database: str, since: str) -> None:
    result = invoke("runs", "list", "--since", since, "--config", str(config),
                    "--database", database)
    assert result.exit_code == 2
    assert "--since" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("command", [["runs", "list"], ["db", "upgrade"], ["run", "hello"]])
def test_a_gateway_error_is_one_line_and_exit_1(config: Path, command: list[str]) -> None:
    result = invoke(*command, "--config", str(config), "--database", "mysql://db/x")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unsupported database URL 'mysql://db/x'")
    assert "Traceback" not in result.output


def test_an_invalid_config_is_its_diagnostics_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: api_workflow\nname: x\nauth: nobody\nsteps: []\n")
    result = invoke("routes", "--config", str(tmp_path))
    assert result.exit_code == 1
    assert "bad.yaml:3:7: error[schema.enum]" in result.stderr


def test_db_upgrade_creates_the_schema(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    result = invoke("db", "upgrade", "--config", str(config), "--database", f"sqlite:///{path}")
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(path)
    try:
        names = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    assert {"gateway_records", "gateway_runs"} <= names
    again = invoke("db", "upgrade", "--config", str(config), "--database", f"sqlite:///{path}")
    assert again.exit_code == 0
    assert "up to date" in again.stdout


def test_db_upgrade_names_what_it_applied(config: Path, tmp_path: Path) -> None:
    result = invoke("db", "upgrade", "--config", str(config),
                    "--database", f"sqlite:///{tmp_path / 'fresh.db'}")
    assert "0001" in result.stdout


@pytest.mark.parametrize("command", [
    ["validate"], ["serve"], ["run"], ["routes"], ["schema"], ["runs", "list"],
    ["runs", "show"], ["db", "upgrade"],
])
def test_every_command_help_shows_an_example(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Example:" in result.stdout
    example = result.stdout.split("Example:", 1)[1].strip().splitlines()[0].strip()
    assert example.startswith("gateway " + " ".join(command)), example


def test_validate_exit_codes(config: Path, tmp_path: Path) -> None:
    assert invoke("validate", str(config)).exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: api_workflow\nname: x\nauth: none\nmethod: PUTT\n")
    result = invoke("validate", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:4:9: error[schema.enum]" in result.stdout
    assert invoke("validate", "--format", "xml").exit_code == 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_refuses_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "one.yaml").write_text(
        "kind: api_workflow\nname: x\nauth: none\nsteps:\n  - action: set\n    values:\n"
        "      a: '{{ params.nope }}'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(bad), "--port",
         str(free_port()), "--database", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 1
    validate = invoke("validate", str(bad))
    assert validate.stdout.strip() in proc.stderr
    assert "error[ref.unknown-param]" in proc.stderr
    assert "Uvicorn running" not in proc.stderr


def test_serve_and_run_refuse_secrets_missing_from_the_environment(tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    name = "GATEWAY_TEST_SECRET_THAT_IS_NEVER_SET"
    (folder / "main.yaml").write_text(
        f"kind: settings\nsecrets: [{name}]\n---\n"
        "kind: api_workflow\nname: x\nauth: none\nsteps:\n  - action: return_data\n"
        f"    data: {{n: '{{{{ secrets.{name} | length }}}}'}}\n")
    env = {k: v for k, v in os.environ.items() if k != name}
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(folder), "--port",
         str(free_port()), "--database", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 1
    assert name in proc.stderr and "Uvicorn running" not in proc.stderr
    ran = CliRunner(env={name: None}).invoke(
        main, ["run", "x", "--config", str(folder), "--database", f"sqlite:///{tmp_path / 'y.db'}"])
    assert ran.exit_code == 1 and name in ran.output
    given = CliRunner(env={name: "abcd"}).invoke(
        main, ["run", "x", "--config", str(folder), "--database", f"sqlite:///{tmp_path / 'y.db'}"])
    assert given.exit_code == 0, given.output
    assert json.loads(given.stdout) == {"status": "success", "response": {"n": 4}}


def test_serve_refuses_a_standard_webhooks_secret_that_is_no_key(tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    name = "GATEWAY_TEST_STANDARD_SECRET"
    (folder / "main.yaml").write_text(
        f"kind: settings\nsecrets: [{name}]\n---\n"
        "kind: api_workflow\nname: hook\nexpose: true\nauth: none\n"
        f"verify: {{scheme: standard-webhooks, secret: '{{{{ secrets.{name} }}}}'}}\n"
        "steps:\n  - action: terminate\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(folder), "--port",
         str(free_port()), "--database", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env={**os.environ, name: "whsec_not-a-key!", "PYTHONPATH": str(
            Path(__file__).resolve().parents[2])})
    assert proc.returncode == 1
    assert "workflow hook: a standard-webhooks secret is whsec_ followed by a key in base64" \
        in proc.stderr
    assert "not-a-key" not in proc.stderr and "Uvicorn running" not in proc.stderr
