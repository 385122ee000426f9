"""The run log as Bubble's logs have it: each run records the user who called it (id and
e-mail), `gateway runs list --user` finds a user's runs by either, and the list shows each
workflow's label; on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import served

from gateway.cli import main

CONFIG = """\
kind: api_workflow
name: signup
expose: true
auth: none
params: {email: {type: text}}
steps:
  - action: signup_user
    email: "{{ params.email }}"
    password: correct horse
---
kind: api_workflow
name: whoami
label: Who am I (profile page)
expose: true
auth: user
steps:
  - action: return_data
    data: {id: "{{ current_user._id }}"}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "main.yaml").write_text(CONFIG)
    return folder


async def two_users_call(folder: Path, database: str) -> dict[str, str]:
    ids = {}
    async with served(folder, database) as gateway:
        for email, calls in (("ada@example.com", 2), ("bob@example.com", 1)):
            signed = (await gateway.client.post("/api/1.1/wf/signup",
                                                json={"email": email})).json()["response"]
            ids[email] = signed["user_id"]
            for _ in range(calls):
                answer = await gateway.client.post(
                    "/api/1.1/wf/whoami", headers={"Authorization": f"Bearer {signed['token']}"})
                assert answer.status_code == 200, answer.text
        assert gateway.storage is not None
        await gateway.storage.runs.flush_runs()
    return ids


def listed(folder: Path, database: str, *args: str) -> list[str]:
    result = CliRunner().invoke(main, ["runs", "list", *args, "--config", str(folder),
                                       "--database", database])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_runs_record_and_find_their_user(folder: Path, storage_url: str) -> None:
    ids = asyncio.run(two_users_call(folder, storage_url))
    by_email = listed(folder, storage_url, "--user", "ADA@example.com")
    assert len(by_email) == 2
    assert all("whoami (Who am I (profile page))  by ada@example.com" in line
               for line in by_email)
    assert listed(folder, storage_url, "--user", ids["ada@example.com"]) == by_email
    assert len(listed(folder, storage_url, "--user", "bob@example.com")) == 1
    assert listed(folder, storage_url, "--user", "nobody@example.com") == []
    assert len(listed(folder, storage_url)) == 5  # two sign-ups (anonymous) and three calls
    run_id = by_email[0].split()[0]
    shown = CliRunner().invoke(main, ["runs", "show", run_id, "--config", str(folder),
                                      "--database", storage_url])
    assert f"user {ids['ada@example.com']} <ada@example.com>" in shown.stdout
