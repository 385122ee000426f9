"""Workflow names as Bubble allows them on the wire: letters of either case, digits, `-`
and `_`, matched case-sensitively as Bubble's URLs are; a name Bubble would refuse is a
located diagnostic, and odd names in URLs find no workflow."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Serve
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.auth import key_hash, new_key
from gateway.compiler.loader import load
from gateway.core.clock import utc_now
from gateway.core.errors import ConfigError

NAMES = """
kind: api_workflow
name: createUser
expose: true
auth: none
steps:
  - action: return_data
    data: {which: camel}
---
kind: api_workflow
name: createuser
expose: true
auth: none
steps:
  - action: return_data
    data: {which: lower}
---
kind: api_workflow
name: 2nd_Step-B
expose: true
auth: none
steps:
  - action: schedule_workflow
    workflow: createUser
    delay: 0s
  - action: return_data
    data: {which: other}
"""


async def test_names_differing_by_case_are_two_workflows(serve: Serve, storage_url: str) -> None:
    async with serve(NAMES, storage_url) as gw:
        for path, which in (("createUser", "camel"), ("createuser", "lower"),
                            ("2nd_Step-B", "other"), ("createUser/", "camel")):
            answer = await gw.client.post(f"/api/1.1/wf/{path}")
            assert answer.status_code == 200, path
            assert answer.json()["response"] == {"which": which}
        for path in ("CREATEUSER", "createUSER", "2nd_step-b"):
            answer = await gw.client.post(f"/api/1.1/wf/{path}")
            assert answer.status_code == 404, path
            assert answer.json()["body"]["status"] == "NOT_FOUND"
        assert gw.storage is not None
        await gw.storage.runs.flush_runs()
        camel = await gw.storage.runs.list_runs(workflow="createUser", limit=50)
        lower = await gw.storage.runs.list_runs(workflow="createuser", limit=50)
        assert [run["workflow"] for run in camel] == ["createUser", "createUser"]
        assert [run["workflow"] for run in lower] == ["createuser"]
        jobs = await gw.storage.jobs.list_jobs(workflow="createUser")
        assert [job.workflow for job in jobs] == ["createUser"]
        assert await gw.storage.jobs.list_jobs(workflow="createuser") == []


async def test_metrics_count_each_name_apart(serve: Serve, storage_url: str) -> None:
    async with serve(NAMES, storage_url, scheduler=False) as gw:
        assert gw.storage is not None
        key = new_key()
        await gw.storage.keys.create_key("metrics", key_hash(key), utc_now())
        await gw.client.post("/api/1.1/wf/createUser")
        for _ in range(2):
            await gw.client.post("/api/1.1/wf/createuser")
        text = (await gw.client.get("/metrics", headers={"Authorization": f"Bearer {key}"})).text
        counts = {sample.labels["workflow"]: sample.value
                  for family in text_string_to_metric_families(text)
                  for sample in family.samples
                  if sample.name == "gateway_runs_total" and sample.labels["status"] == "success"}
        assert counts["createUser"] == 1
        assert counts["createuser"] == 2


@pytest.mark.parametrize("path", [
    "create%55ser",      # percent-encoded `U`: the path decodes to `createUser`, not declared
    "..", "%2e%2e", "createuser/..", "createuser%2F", "%2e/createuser",
    "cre\u0430teuser",   # a Cyrillic `а` in place of the Latin `a`
    "createuser\u200b",  # a zero-width space after the name
    "ｃreateuser",       # a full-width `c`
    "create user", "create%00user", "-createuser",
])
async def test_odd_names_in_urls_find_no_workflow(serve: Serve, path: str) -> None:
    config = NAMES.split("---")[1]  # `createuser` only
    async with serve(config) as gw:
        answer = await gw.client.post(f"/api/1.1/wf/{path}")
        assert answer.status_code == 404
        assert answer.json()["body"]["status"] == "NOT_FOUND"
        assert gw.storage is not None
        await gw.storage.runs.flush_runs()
        assert await gw.storage.runs.list_runs(limit=50) == []


@pytest.mark.parametrize("name", ["create user", "-create", "_create", "créer", "create.user"])
def test_a_name_bubble_refuses_is_a_located_diagnostic(tmp_path: Path, name: str) -> None:
    path = tmp_path / "names.yaml"
    path.write_text("kind: api_workflow\n"
                    f"name: '{name}'\n"
                    "auth: none\n"
                    "steps: [{action: terminate}]\n")
    with pytest.raises(ConfigError) as caught:
        load([path])
    problems = [(d.code, d.line, d.column, d.pointer) for d in caught.value.diagnostics]
    assert problems == [("schema.pattern", 2, 7, "/name")]
