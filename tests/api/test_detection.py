"""Detecting parameters from a sample request: `POST .../<name>/initialize` (admin keys
only; nothing runs) and `gateway detect SAMPLE.json`, on both backends."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner
from conftest import Serve, served

from gateway.api.auth import key_hash, new_key
from gateway.api.detection import detect
from gateway.cli import main
from gateway.storage import Storage

CONFIG = """\
kind: data_type
name: delivery
fields: {event: {type: text}}
---
kind: api_workflow
name: hook
expose: true
auth: none
steps:
  - {action: create_thing, type: delivery, fields: {event: x}}
---
kind: api_workflow
name: hidden
auth: none
steps:
  - action: terminate
"""
SAMPLE = {"id": "evt_1", "amount": 1250, "rate": 0.2, "paid": True,
          "created": "2026-11-25T12:00:00Z", "day": "2026-11-25", "tags": ["a", "b"],
          "data": {"object": {"id": "in_1"}}, "note": None, "bad key": 1, "empty": []}
EXPECTED = {
    "id": {"type": "text"}, "amount": {"type": "integer"}, "rate": {"type": "number"},
    "paid": {"type": "boolean"}, "created": {"type": "date"}, "day": {"type": "date"},
    "tags": {"type": "text", "list": True}, "data": {"type": "object"},
    "note": {"type": "text", "optional": True}, "empty": {"type": "text", "list": True},
}


def test_what_is_detected() -> None:
    params, skipped, untyped = detect(SAMPLE)
    assert params == EXPECTED
    assert skipped == ["bad key"]
    assert untyped == []
    assert detect({"n": [1, 2.5], "mixed": [1, "a"], "d": "2026-13-45"})[0] == {
        "n": {"type": "number", "list": True}, "mixed": {"type": "text", "list": True},
        "d": {"type": "text"}}


# Values whose first guess a parameter of that type would refuse: each is either given a
# type that takes it, or left out and named.
AWKWARD = {"blank": "", "late": "9999-12-31T23:59:59-01:00", "early": "0001-01-01T00:00:00+01:00",
           "huge": 10**30, "ints_and_null": [1, None], "nulls": [None],
           "dates_and_null": ["2024-01-01", None], "nested": [[1, 2], [3]],
           "flags_and_ints": [True, 1], "objects_and_ints": [{}, 1], "late_dates": [
               "9999-12-31T23:59:59-01:00"], "words_and_ints": ["a", 1]}


def test_a_detected_type_takes_its_own_sample() -> None:
    params, skipped, untyped = detect(AWKWARD)
    assert skipped == []
    assert params == {
        "blank": {"type": "text", "optional": True}, "late": {"type": "text"},
        "early": {"type": "text"}, "huge": {"type": "integer"},
        "late_dates": {"type": "text", "list": True},
        "words_and_ints": {"type": "text", "list": True}}
    assert untyped == ["ints_and_null", "nulls", "dates_and_null", "nested", "flags_and_ints",
                       "objects_and_ints"]


async def test_a_workflow_of_the_detected_params_takes_the_sample(
        serve: Serve, storage_url: str) -> None:
    """The YAML pasted into a workflow, and the sample sent to it: every parameter detected
    is read, none refused."""
    sample = {**SAMPLE, **AWKWARD, "newline\n": 1}
    pasted = CliRunner().invoke(main, ["detect", "-"], input=json.dumps(sample))
    assert pasted.exit_code == 0, pasted.output
    assert "left out: 'bad key', 'newline\\n'\n" in pasted.output
    assert "'nested'" in pasted.output
    config = ("kind: api_workflow\nname: pasted\nexpose: true\nauth: none\n" + pasted.output +
              "steps:\n  - action: return_data\n    data: {n: 1}\n")
    async with serve(config, storage_url) as gateway:
        answer = await gateway.client.post("/api/1.1/wf/pasted", json=sample)
    assert answer.status_code == 200, answer.text


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, database: str,
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, Storage, str]]:
    async with served(CONFIG, database, home=tmp_path) as gw:
        key = new_key()
        await gw.storage.keys.create_key("ops", key_hash(key), datetime.now(UTC))
        yield gw.client, gw.storage, key


async def test_initialize_answers_yaml_to_paste_and_runs_nothing(
        tmp_path: Path, storage_url: str) -> None:
    async with gateway(tmp_path, storage_url) as (client, storage, key):
        response = await client.post("/api/1.1/wf/hook/initialize?source=web", json=SAMPLE,
                                     headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/yaml")
        pasted = yaml.safe_load(response.text)
        assert pasted["params"] == {**EXPECTED, "source": {"type": "text"}}
        assert "'bad key'" in response.text
        assert (await storage.records.search("delivery", [], [], 10)).count == 0


async def test_initialize_is_for_admin_keys_and_exposed_workflows(
        tmp_path: Path, storage_url: str) -> None:
    async with gateway(tmp_path, storage_url) as (client, _, key):
        anonymous = await client.post("/api/1.1/wf/hook/initialize", json=SAMPLE)
        assert anonymous.status_code == 401
        assert anonymous.json()["body"]["status"] == "UNAUTHORIZED"
        auth = {"Authorization": f"Bearer {key}"}
        hidden = await client.post("/api/1.1/wf/hidden/initialize", json=SAMPLE, headers=auth)
        assert hidden.status_code == 404
        get = await client.get("/api/1.1/wf/hook/initialize", headers=auth)
        assert get.status_code == 405
        bad = await client.post("/api/1.1/wf/hook/initialize", content=b"[1, 2]",
                                headers={**auth, "Content-Type": "application/json"})
        assert bad.status_code == 400
        form = await client.post("/api/1.1/wf/hook/initialize", data={"a": "1", "b": "x"},
                                 headers=auth)
        assert yaml.safe_load(form.text)["params"] == {"a": {"type": "text"},
                                                       "b": {"type": "text"}}


def test_gateway_detect_offline(tmp_path: Path) -> None:
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps(SAMPLE))
    result = CliRunner().invoke(main, ["detect", str(sample)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["params"] == EXPECTED
    from_stdin = CliRunner().invoke(main, ["detect", "-"], input='{"n": 1}')
    assert from_stdin.output == "params:\n  n: {type: integer}\n"


@pytest.mark.parametrize("content", ["[1, 2]", "not json", '"text"', "[" * 100_000,
                                     "[" * 1000 + "12345678901234567890" + "]" * 1000,
                                     '{"a": NaN}', '{"a": 1e400}'])
def test_gateway_detect_refuses_what_is_not_an_object(tmp_path: Path, content: str) -> None:
    sample = tmp_path / "sample.json"
    sample.write_text(content)
    result = CliRunner().invoke(main, ["detect", str(sample)])
    assert result.exit_code == 1
    assert "error:" in result.output


def test_detected_yaml_validates_in_a_workflow(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["detect", "-"], input=json.dumps(SAMPLE))
    params = result.output
    (tmp_path / "w.yaml").write_text(
        "kind: api_workflow\nname: pasted\nauth: none\n" + params +
        "steps:\n  - action: terminate\n")
    check = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert check.exit_code == 0, check.output
