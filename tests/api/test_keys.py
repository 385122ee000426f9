"""Admin API keys and access levels, on SQLite and PostgreSQL: `gateway keys`, the three
levels against each kind of caller, revocation, and keys kept out of every store and log."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest
from click.testing import CliRunner, Result
from conftest import served

from gateway.api.auth import Authenticator, key_hash, new_key
from gateway.cli import main
from gateway.core.clock import utc_now
from gateway.storage import Storage

CONFIG = """
kind: api_workflow
name: public
expose: true
auth: none
steps:
  - action: return_data
    data: {who: "{{ current_user }}", query: "{{ request.query }}"}
---
kind: api_workflow
name: members
expose: true
auth: user
steps:
  - action: return_data
    data: {ok: true}
---
kind: api_workflow
name: staff
expose: true
auth: admin
params: {note: {type: text, optional: true}}
steps:
  - action: return_data
    data: {ok: true}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows.d"
    folder.mkdir()
    (folder / "main.yaml").write_text(textwrap.dedent(CONFIG).strip())
    return folder


def keys(config: Path, url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["keys", *args, "--config", str(config), "--database", url],
                              catch_exceptions=False)


def test_a_key_is_256_random_bits_of_url_safe_text() -> None:
    made = {new_key() for _ in range(100)}
    assert len(made) == 100
    assert all(len(k) >= 43 and k.replace("-", "").replace("_", "").isalnum() for k in made)


def test_keys_create_list_revoke(config: Path, storage_url: str) -> None:
    created = keys(config, storage_url, "create", "--label", "ci")
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert len(key) >= 43
    listed = keys(config, storage_url, "list")
    assert listed.exit_code == 0 and listed.stdout.startswith("ci ")
    assert "last used never" in listed.stdout and key not in listed.output
    again = keys(config, storage_url, "create", "--label", "ci")
    assert again.exit_code == 1 and "exists already" in again.stderr
    assert keys(config, storage_url, "revoke", "ci").exit_code == 0
    assert "REVOKED" in keys(config, storage_url, "list").stdout
    twice = keys(config, storage_url, "revoke", "ci")
    assert twice.exit_code == 1 and "no active key" in twice.stderr


def test_only_a_hash_of_the_key_is_stored(config: Path, storage_url: str) -> None:
    key = keys(config, storage_url, "create", "--label", "ci").stdout.strip().splitlines()[-1]
    if storage_url.startswith("sqlite"):
        path = Path(storage_url.removeprefix("sqlite:///"))
        stored = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    else:
        with psycopg.connect(storage_url) as conn:
            stored = repr(conn.execute("SELECT * FROM gateway_keys").fetchall()).encode()
    assert key.encode() not in stored
    assert key_hash(key).encode() in stored


@contextlib.asynccontextmanager
async def serving(config: Path, url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Storage]]:
    async with served(config, url) as gateway:
        yield gateway.client, gateway.storage


async def _admin_key(storage: Storage, label: str = "ci") -> str:
    key = new_key()
    await storage.keys.create_key(label, key_hash(key), utc_now())
    return key


ALLOWED = {  # (workflow, caller) -> status
    ("public", "anonymous"): 200, ("public", "admin"): 200, ("public", "invalid"): 401,
    ("members", "anonymous"): 401, ("members", "admin"): 200, ("members", "invalid"): 401,
    ("staff", "anonymous"): 401, ("staff", "admin"): 200, ("staff", "invalid"): 401,
    ("public", "revoked"): 401, ("members", "revoked"): 401, ("staff", "revoked"): 401,
}


@pytest.mark.parametrize("how", ["bearer", "api_token"])
async def test_each_access_level_against_each_caller(config: Path, storage_url: str,
                                                     how: str) -> None:
    async with serving(config, storage_url) as (client, storage):
        tokens = {"anonymous": None, "admin": await _admin_key(storage),
                  "invalid": new_key(), "revoked": await _admin_key(storage, "old")}
        await storage.keys.revoke_key("old", utc_now())
        for (workflow, caller), status in ALLOWED.items():
            token = tokens[caller]
            headers = {"Authorization": f"Bearer {token}"} if token and how == "bearer" else {}
            params = {"api_token": token} if token and how == "api_token" else {}
            answer = await client.post(f"/api/1.1/wf/{workflow}", headers=headers,
                                       params=params)
            assert answer.status_code == status, (workflow, caller, answer.text)
            if status == 401:
                assert answer.json()["body"]["status"] == "UNAUTHORIZED"


async def test_the_admin_identity_and_no_token_in_templates(config: Path,
                                                            storage_url: str) -> None:
    async with serving(config, storage_url) as (client, storage):
        key = await _admin_key(storage)
        answer = await client.post("/api/1.1/wf/public", params={"api_token": key, "x": "1"})
        assert answer.status_code == 200
        assert answer.json()["response"] == {"who": None, "query": {"x": "1"}}
        await storage.runs.flush_runs()
        (run,) = await storage.runs.list_runs(workflow="public")
    assert run["identity"] == {"kind": "admin", "user_id": None}
    assert key not in repr(run)


async def test_the_credential_is_checked_before_the_body_is_read(config: Path,
                                                                 storage_url: str) -> None:
    async with serving(config, storage_url) as (client, _):
        huge = b"x" * (2 * 1024 * 1024)  # over the 1 MiB body limit
        answer = await client.post("/api/1.1/wf/staff", content=huge)
    assert answer.status_code == 401


async def test_a_revoked_key_stops_working_within_the_cache_time(storage: Storage) -> None:
    now = [0.0]
    auth = Authenticator(storage.keys, monotonic=lambda: now[0])
    key = await _admin_key(storage)
    assert (await auth.identify(key)) is not None
    await storage.keys.revoke_key("ci", utc_now())
    now[0] = 0.5
    assert (await auth.identify(key)) is not None  # cached, for at most a second
    now[0] = 1.01
    assert (await auth.identify(key)) is None


async def test_last_used_is_kept(storage: Storage) -> None:
    auth = Authenticator(storage.keys)
    key = await _admin_key(storage)
    await auth.identify(key)
    (found,) = await storage.keys.list_keys()
    assert found.last_used_at is not None


async def test_garbage_credentials_do_not_grow_the_cache(storage: Storage) -> None:
    auth = Authenticator(storage.keys)
    for _ in range(50):
        assert await auth.identify(new_key()) is None
    assert await auth.identify("x" * 10_000) is None  # not even looked up
    assert len(auth._cache) == 50
