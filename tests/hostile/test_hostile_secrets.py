"""Secrets and caller text in every sink, on SQLite and PostgreSQL: a secret never reaches an
error response or the server log, and caller text cannot forge a line of the server log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from conftest import served

from gateway.core.encoding import escape

SECRET = "s3cr3t-value-42"
CONFIG = """
kind: settings
secrets: [API_KEY]
---
kind: data_type
name: counter
fields: {n: {type: integer}}
---
kind: api_workflow
name: bump
expose: true
auth: none
steps:
  - action: make_changes
    type: counter
    thing: "{{ secrets.API_KEY }}"
    fields: {n: 1}
---
kind: api_workflow
name: when
expose: true
auth: none
params: {text: {type: text, optional: true}}
steps:
  - action: return_data
    data: {at: "{{ parse_date(params.text or secrets.API_KEY) }}"}
"""


@contextlib.asynccontextmanager
async def client_for(tmp_path: Path, url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with served(CONFIG, url, home=tmp_path, environment={"API_KEY": SECRET}) as gateway:
        yield gateway.client


async def test_a_secret_in_an_error_message_is_redacted_in_the_answer(
        tmp_path: Path, storage_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with client_for(tmp_path, storage_url) as client:
        answer = await client.post("/api/1.1/wf/bump")
    assert answer.status_code == 404
    assert SECRET not in answer.text and "[redacted]" in answer.text
    assert SECRET not in caplog.text


async def test_a_secret_in_a_failed_template_is_redacted_in_the_server_log(
        tmp_path: Path, storage_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway"):
        async with client_for(tmp_path, storage_url) as client:
            answer = await client.post("/api/1.1/wf/when")
    assert answer.status_code == 500
    assert SECRET not in answer.text
    assert "failed at" in caplog.text and SECRET not in caplog.text


async def test_caller_text_cannot_forge_a_server_log_line(
        tmp_path: Path, storage_url: str, caplog: pytest.LogCaptureFixture) -> None:
    forged = "nope\nERROR:     gateway.run: run 1 of admin failed\r\x00"
    with caplog.at_level(logging.ERROR, logger="gateway"):
        async with client_for(tmp_path, storage_url) as client:
            answer = await client.post("/api/1.1/wf/when", json={"text": forged})
    assert answer.status_code == 500
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.run"]
    assert len(lines) == 1 and "\n" not in lines[0] and "\r" not in lines[0]
    assert "\\nERROR:" in lines[0]


@pytest.mark.parametrize(("text", "shown"), [
    ("a\nb", "a\\nb"), ("a\r\nb", "a\\r\\nb"), ("\x00\x1b[31m", "\\x00\\x1b[31m"),
    ("tab\tkept", "tab\tkept"), ("line\u2028sep", "line\\u2028sep"), ("plain €", "plain €"),
])
def test_escape_keeps_text_on_one_line(text: str, shown: str) -> None:
    assert escape(text) == shown
