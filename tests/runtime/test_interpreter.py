"""The interpreter on plain data: steps, conditions, errors, custom events and the run log."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.compiler.loader import load
from gateway.core.settings import with_environment
from gateway.runtime.context import ADMIN, Identity
from gateway.runtime.interpreter import Interpreter, RunResult
from gateway.runtime.model import Registry
from gateway.runtime.origin import Call, Origin
from gateway.storage import Storage, open_storage


def registry_of(tmp_path: Path, *documents: str) -> Registry:
    path = tmp_path / "workflows.yaml"
    path.write_text("\n---\n".join(textwrap.dedent(doc).strip() for doc in documents))
    return load([path])


@contextlib.asynccontextmanager
async def store(tmp_path: Path, registry: Registry) -> AsyncIterator[Storage]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    storage = open_storage(f"sqlite:///{tmp_path / 'gateway.db'}")
    await storage.open(list(registry.data_types.values()))
    try:
        yield storage
    finally:
        await storage.close()


async def run_logged(tmp_path: Path, registry: Registry, name: str,
                     params: dict[str, Any] | None = None,
                     **options: Any) -> tuple[RunResult, dict[str, Any]]:
    """Run `name` and return its result and its run log entry."""
    async with store(tmp_path, registry) as storage:
        interpreter = Interpreter(registry, storage)
        result = await interpreter.run(registry.workflows[name], params or {}, **options)
        await storage.runs.flush_runs()
        logged = await storage.runs.get_run(result.run_id)
    assert logged is not None
    return result, logged


def data_of(result: RunResult) -> Any:
    assert result.error is None, result.error
    assert result.reply is not None
    return result.reply.data


STEPS = """
kind: api_workflow
name: steps
auth: none
params:
  n: {type: integer}
steps:
  - id: first
    action: set
    values: {double: "{{ params.n * 2 }}", label: "n is {{ params.n }}"}
  - id: big
    action: set
    only_when: "{{ steps.first.double > 10 }}"
    values: {big: true}
  - id: broken
    action: set
    on_error: continue
    values: {v: "{{ params.n // 0 }}"}
  - id: after
    action: set
    values:
      double: "{{ steps.first.double }}"
      big: "{{ steps.big.big if steps.big else false }}"
      broken: "{{ steps.broken }}"
  - action: return_data
    data: "{{ steps.after }}"
"""


async def test_step_results_only_when_and_on_error_continue(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, STEPS)
    small, small_log = await run_logged(tmp_path / "a", registry, "steps", {"n": "3"})
    assert data_of(small) == {"double": 6, "big": False, "broken": None}
    big, big_log = await run_logged(tmp_path / "b", registry, "steps", {"n": 6})
    assert data_of(big) == {"double": 12, "big": True, "broken": None}

    steps = {entry["id"]: entry for entry in small_log["steps"]}
    assert [e["id"] for e in small_log["steps"]] == ["first", "big", "broken", "after", None]
    assert steps["first"]["status"] == "success" and "reason" not in steps["first"]
    assert steps["big"]["status"] == "skipped"
    assert steps["big"]["reason"] == "only_when was false"
    assert steps["broken"]["status"] == "skipped"
    assert "on_error: continue" in steps["broken"]["reason"]
    assert "by zero" in steps["broken"]["reason"]
    assert {e["status"] for e in big_log["steps"]} == {"success", "skipped"}
    for entry in small_log["steps"]:
        assert entry["action"] in {"set", "return_data"}
        assert isinstance(entry["duration_ms"], (int, float)) and entry["duration_ms"] >= 0
    assert small_log["status"] == "success"
    assert small_log["workflow"] == "steps"


TERMINATE = """
kind: api_workflow
name: stop
auth: none
steps:
  - id: a
    action: set
    values: {a: 1}
  - action: terminate
  - action: fail
    message: never reached
"""


async def test_terminate_ends_the_run_with_success_and_no_data(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, TERMINATE)
    result, logged = await run_logged(tmp_path, registry, "stop")
    assert data_of(result) == {}
    assert logged["status"] == "success"
    assert [e["action"] for e in logged["steps"]] == ["set", "terminate"]


EVENTS = """
kind: custom_event
name: normalize
params: {email: {type: text}, times: {type: integer, optional: true, default: 1}}
returns: {email: {type: text}, times: {type: integer}}
steps:
  - action: return_data
    data: {email: "{{ params.email | trim | lower }}", times: "{{ params.times }}"}
---
kind: custom_event
name: outer
params: {email: {type: text}}
returns: {email: {type: text}, depth: {type: integer}, inner_depth: {type: integer}}
steps:
  - id: inner
    action: trigger_event
    event: normalize
    params: {email: "{{ params.email }}"}
  - id: where
    action: trigger_event
    event: depth-probe
  - action: return_data
    data:
      email: "{{ steps.inner.email }}"
      depth: "{{ run.depth }}"
      inner_depth: "{{ steps.where.depth }}"
---
kind: custom_event
name: depth-probe
returns: {depth: {type: integer}}
steps:
  - action: return_data
    data: {depth: "{{ run.depth }}"}
---
kind: custom_event
name: silent
steps:
  - action: log
    message: nothing to return
---
kind: api_workflow
name: caller
auth: none
params: {email: {type: text}}
steps:
  - id: direct
    action: trigger_event
    event: normalize
    params: {email: "{{ params.email }}", times: "3"}
  - id: nested
    action: trigger_event
    event: outer
    params: {email: "  Nested@Example.COM "}
  - id: quiet
    action: trigger_event
    event: silent
  - action: return_data
    data:
      direct: "{{ steps.direct }}"
      nested: "{{ steps.nested }}"
      quiet: "{{ steps.quiet }}"
      depth: "{{ run.depth }}"
"""


async def test_trigger_event_returns_the_events_values_nested(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, EVENTS)
    result, logged = await run_logged(tmp_path, registry, "caller",
                                      {"email": " Ada@Example.com"})
    assert data_of(result) == {
        "direct": {"email": "ada@example.com", "times": 3},
        "nested": {"email": "nested@example.com", "depth": 1, "inner_depth": 2},
        "quiet": {},
        "depth": 0,
    }
    direct, nested, quiet, _ = logged["steps"]
    assert direct["action"] == "trigger_event" and direct["status"] == "success"
    assert [e["action"] for e in direct["steps"]] == ["return_data"]
    assert [e["id"] for e in nested["steps"]] == ["inner", "where", None]
    assert [e["action"] for e in nested["steps"][0]["steps"]] == ["return_data"]
    assert [e["action"] for e in quiet["steps"]] == ["log"]


def chain(length: int) -> list[str]:
    """A workflow calling event e1, which calls e2, ... down to e<length>."""
    docs = [f"""
kind: custom_event
name: e{i}
returns: {{depth: {{type: integer}}}}
steps:
  - id: next
    action: trigger_event
    event: e{i + 1}
  - action: return_data
    data: {{depth: "{{{{ steps.next.depth }}}}"}}
""" for i in range(1, length)]
    docs.append(f"""
kind: custom_event
name: e{length}
returns: {{depth: {{type: integer}}}}
steps:
  - action: return_data
    data: {{depth: "{{{{ run.depth }}}}"}}
""")
    docs.append("""
kind: api_workflow
name: deep
auth: none
steps:
  - id: top
    action: trigger_event
    event: e1
  - action: return_data
    data: "{{ steps.top }}"
""")
    return docs


async def test_the_depth_limit_allows_ten_levels(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, *chain(10))
    assert registry.settings.max_event_depth == 10
    result, _ = await run_logged(tmp_path, registry, "deep")
    assert data_of(result) == {"depth": 10}


async def test_the_depth_limit_stops_the_eleventh_level(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, *chain(11))
    result, logged = await run_logged(tmp_path, registry, "deep")
    assert result.error is not None
    assert result.error.status == 500 and result.error.code == "ERROR"
    assert "e11" in result.error.message and "10" in result.error.message
    assert logged["status"] == "failed"
    assert logged["error"]["code"] == "ERROR"
    assert logged["error"]["location"].endswith(".yaml:" + logged["error"]["location"]
                                                .rsplit(":", 1)[1])


FAILS = """
kind: api_workflow
name: refuse
auth: none
params: {password: {type: text, optional: true}}
steps:
  - action: fail
    status: 409
    code: TAKEN
    message: already taken
---
kind: api_workflow
name: broken
auth: none
steps:
  - action: set
    values: {a: 1}
  - action: set
    values: {b: "{{ [1][5] }}"}
---
kind: api_workflow
name: gated
auth: none
only_when: "{{ params.go }}"
params: {go: {type: boolean}}
steps:
  - action: terminate
"""


async def test_run_log_of_a_fail_step(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, FAILS)
    result, logged = await run_logged(tmp_path, registry, "refuse", origin=Origin("cli"),
                                      identity=ADMIN)
    assert result.error is not None
    assert (result.error.status, result.error.code, result.error.message) == (
        409, "TAKEN", "already taken")
    assert logged["status"] == "failed"
    assert logged["source"] == "cli"
    assert logged["identity"] == {"kind": "admin", "user_id": None}
    assert logged["error"]["code"] == "TAKEN"
    (step,) = logged["steps"]
    assert step["status"] == "failed" and step["reason"] == "already taken"


async def test_run_log_of_a_run_error_has_the_step_location(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, FAILS)
    result, logged = await run_logged(tmp_path, registry, "broken")
    assert result.error is not None and result.error.status == 500
    assert logged["status"] == "failed"
    assert [e["status"] for e in logged["steps"]] == ["success", "failed"]
    location = logged["error"]["location"]
    file, line = location.rsplit(":", 1)
    assert Path(file).name == "workflows.yaml"
    lines = (tmp_path / "workflows.yaml").read_text().splitlines()
    assert "[1][5]" in lines[int(line)]
    assert "step 2" in logged["error"]["message"]


async def test_run_log_statuses_for_not_run_and_rejected(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, FAILS)
    not_run, logged = await run_logged(tmp_path / "a", registry, "gated", {"go": "no"},
                                       identity=Identity("user", "u-1"))
    assert not_run.error is not None and not_run.error.code == "NOT_RUN"
    assert logged["status"] == "not_run" and logged["steps"] == []
    assert logged["identity"] == {"kind": "user", "user_id": "u-1"}
    rejected, logged = await run_logged(tmp_path / "b", registry, "gated", {})
    assert rejected.error is not None and rejected.error.code == "MISSING_DATA"
    assert logged["status"] == "rejected"
    assert logged["source"] == "http"


SECRETS = """
kind: settings
secrets: [API_KEY]
---
kind: api_workflow
name: uses-secret
auth: none
params:
  echo: {type: text}
  password: {type: text, optional: true}
  nested: {type: object, optional: true}
steps:
  - id: call
    action: set
    values:
      header: "Bearer {{ secrets.API_KEY }}"
      key: "{{ secrets.API_KEY }}"
  - action: return_data
    data:
      echo: "{{ params.echo }}"
      key: "{{ steps.call.key }}"
      header: "{{ steps.call.header }}"
      prefix: "{{ secrets.API_KEY[:3] }}"
"""


async def test_secrets_are_redacted_in_the_run_log(tmp_path: Path) -> None:
    loaded = registry_of(tmp_path, SECRETS)
    settings = with_environment(loaded.settings, {"API_KEY": "s3cr3t-value"})
    registry = dataclasses.replace(loaded, settings=settings)
    result, logged = await run_logged(tmp_path, registry, "uses-secret", {
        "echo": "s3cr3t-value", "password": "hunter2",
        "nested": {"token": "abc", "list": ["s3cr3t-value", "fine"]},
    })
    # The caller gets what the workflow returns; only the log is redacted.
    assert data_of(result)["key"] == "s3cr3t-value"
    assert data_of(result)["prefix"] == "s3c"
    assert logged["params"]["echo"] == "[redacted]"
    assert logged["params"]["password"] == "[redacted]"
    assert logged["params"]["nested"] == {"token": "[redacted]",
                                          "list": ["[redacted]", "fine"]}
    assert logged["result"]["key"] == "[redacted]"
    assert logged["result"]["prefix"] == "s3c"
    kept = {**logged, "result": {k: v for k, v in logged["result"].items() if k != "header"}}
    assert "s3cr3t-value" not in repr(kept)
    assert "hunter2" not in repr(logged)


async def test_a_secret_inside_a_longer_value_is_redacted(tmp_path: Path) -> None:
    loaded = registry_of(tmp_path, SECRETS)
    registry = dataclasses.replace(
        loaded, settings=with_environment(loaded.settings, {"API_KEY": "s3cr3t-value"}))
    result, logged = await run_logged(tmp_path, registry, "uses-secret", {"echo": "x"})
    assert data_of(result)["header"] == "Bearer s3cr3t-value"
    assert "s3cr3t-value" not in repr(logged)


async def test_undeclared_secret_is_a_run_error_not_an_empty_string(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, SECRETS)  # API_KEY declared but not in the environment
    result, logged = await run_logged(tmp_path, registry, "uses-secret", {"echo": "x"})
    assert result.error is not None and result.error.status == 500
    assert logged["status"] == "failed"
    assert "API_KEY" in logged["steps"][0]["reason"]


async def test_the_run_variable(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, """
        kind: api_workflow
        name: who
        auth: none
        steps:
          - action: return_data
            data: {id: "{{ run.id }}", workflow: "{{ run.workflow }}", depth: "{{ run.depth }}",
                   user: "{{ current_user }}"}
        """)
    result, _ = await run_logged(tmp_path, registry, "who", identity=Identity("user", "u-7"))
    assert data_of(result) == {"id": result.run_id, "workflow": "who", "depth": 0,
                               "user": {"_id": "u-7"}}


async def test_runs_without_a_store_still_answer(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, STEPS)
    result = await Interpreter(registry).run(registry.workflows["steps"], {"n": 1})
    assert data_of(result) == {"double": 2, "big": False, "broken": None}


async def test_a_run_s_origin_and_call_reach_its_templates_and_its_run_log(
        tmp_path: Path) -> None:
    """What started a run (`Origin`) and what its call says (`Call`) travel as two values:
    `run` takes at most six parameters."""
    registry = registry_of(tmp_path, """
        kind: api_workflow
        name: where
        auth: none
        steps:
          - action: return_data
            data: {source: "{{ run.source }}", path: "{{ request.path }}"}
        """)
    result, logged = await run_logged(tmp_path, registry, "where", origin=Origin("cli"),
                                      call=Call({"path": "/api/where"}, "192.0.2.7"))
    assert data_of(result) == {"source": "cli", "path": "/api/where"}
    assert (logged["source"], logged["client"]) == ("cli", "192.0.2.7")
    parameters = inspect.signature(Interpreter.run).parameters
    assert len(parameters) - 1 <= 6, list(parameters)  # `self` aside
