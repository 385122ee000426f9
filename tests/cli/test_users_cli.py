"""`gateway users` on SQLite and PostgreSQL: users made with a password from stdin, listed,
shown and disabled (a disabled user cannot log in and its tokens stop working)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.core.errors import InvalidLoginError
from gateway.core.settings import Settings
from gateway.runtime.accounts import Accounts
from gateway.storage import open_storage

PASSWORD = "correct horse battery"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "main.yaml"
    path.write_text("kind: data_type\nname: user\nfields:\n  name: {type: text}\n")
    return path


def users(config: Path, url: str, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["users", *args, "--config", str(config),
                                     "--database", url], input=stdin)


async def _log_in(url: str, email: str, password: str) -> str | None:
    store = open_storage(url)
    await store.open()
    try:
        accounts = Accounts(store.users, Settings())
        try:
            session = await accounts.login(email, password, False)
        except InvalidLoginError:
            return None
        return str(session["token"])
    finally:
        await store.close()


async def _user_of(url: str, token: str) -> str | None:
    store = open_storage(url)
    await store.open()
    try:
        return await Accounts(store.users, Settings()).user_of(token)
    finally:
        await store.close()


def test_create_list_show_and_disable(config: Path, storage_url: str) -> None:
    made = users(config, storage_url, "create", "--email", "Ada@Example.com",
                 "--password-stdin", stdin=PASSWORD + "\n")
    assert made.exit_code == 0, made.output
    user_id = made.stdout.strip()
    bare = users(config, storage_url, "create", "--email", "bo@example.com")
    again = users(config, storage_url, "create", "--email", "ADA@example.com")
    assert bare.exit_code == 0 and again.exit_code == 1
    token = asyncio.run(_log_in(storage_url, "ada@example.com", PASSWORD))
    assert token is not None
    listed = users(config, storage_url, "list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["email"], r["has_password"], r["disabled_at"]) for r in rows] == [
        ("ada@example.com", True, None), ("bo@example.com", False, None)]
    assert PASSWORD not in listed.output
    shown = users(config, storage_url, "show", "ada@example.com")
    assert shown.exit_code == 0 and user_id in shown.stdout and "password" in shown.stdout
    disabled = users(config, storage_url, "disable", user_id)
    assert disabled.exit_code == 0 and "disabled" in disabled.stdout
    assert "DISABLED" in users(config, storage_url, "show", user_id).stdout
    assert asyncio.run(_log_in(storage_url, "ada@example.com", PASSWORD)) is None
    assert asyncio.run(_user_of(storage_url, token)) is None
    enabled = users(config, storage_url, "enable", "ADA@example.com")
    assert enabled.exit_code == 0 and f"enabled {user_id}" in enabled.stdout
    assert "DISABLED" not in users(config, storage_url, "show", user_id).stdout
    assert asyncio.run(_log_in(storage_url, "ada@example.com", PASSWORD)) is not None
    assert asyncio.run(_user_of(storage_url, token)) is None  # revoked with the disable
    again = users(config, storage_url, "enable", user_id)
    assert again.exit_code == 0 and "was not disabled" in again.stdout
    unknown = users(config, storage_url, "show", "who@example.com")
    assert unknown.exit_code == 1 and "no user" in unknown.output
