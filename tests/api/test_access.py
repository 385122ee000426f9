"""The whole matrix, on SQLite and PostgreSQL: each access level against each identity
(anonymous, a user, an expired token, a logged-out token, a revoked key, an admin key), and
no credential in clear in the run log or the server log."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import httpx
import pytest
from conftest import Serve
from support import Clock

from gateway.api.auth import KEY_CACHE_SECONDS, key_hash, new_key

CONFIG = """
kind: api_workflow
name: open
expose: true
auth: none
steps: [{action: terminate}]
---
kind: api_workflow
name: members
expose: true
auth: user
steps: [{action: terminate}]
---
kind: api_workflow
name: staff
expose: true
auth: admin
steps: [{action: terminate}]
---
kind: api_workflow
name: signup
expose: true
auth: none
params: {email: {type: text}}
steps:
  - {action: signup_user, email: "{{ params.email }}", password: correct horse battery}
---
kind: api_workflow
name: logout
expose: true
auth: user
steps: [{action: logout_user}]
"""
EXPECTED = {  # identity -> (open, members, staff)
    "anonymous": (200, 401, 401),
    "user": (200, 200, 403),
    "expired token": (401, 401, 401),
    "logged-out token": (401, 401, 401),
    "revoked key": (401, 401, 401),
    "admin": (200, 200, 200),
}


async def _settled(client: httpx.AsyncClient, clock: Clock, headers: dict[str, str]) -> None:
    """Move the clock past the credential cache, so that a revocation is seen."""
    clock.now += timedelta(seconds=KEY_CACHE_SECONDS + 0.05)
    await client.post("/api/1.1/wf/open", headers=headers)


async def test_each_access_level_against_each_identity(
        serve: Serve, storage_url: str, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    caplog.set_level(logging.DEBUG)
    async with serve(CONFIG, storage_url, clock=clock, monotonic=clock.monotonic) as gateway:
        client, storage = gateway.client, gateway.storage

        async def token(email: str) -> str:
            answer = await client.post("/api/1.1/wf/signup", json={"email": email})
            return str(answer.json()["response"]["token"])

        old, gone = await token("o@x.io"), await token("g@x.io")
        admin, revoked = new_key(), new_key()
        await storage.keys.create_key("admin", key_hash(admin), clock())
        await storage.keys.create_key("old", key_hash(revoked), clock())
        await storage.keys.revoke_key("old", clock())
        await client.post("/api/1.1/wf/logout", headers={"Authorization": f"Bearer {gone}"})
        clock.now += timedelta(hours=25)  # past the 24 h lifetime of the tokens so far
        user = await token("v@x.io")  # a fresh one for the `user` row
        began = time.monotonic()
        credentials = {"anonymous": None, "user": user, "expired token": old,
                       "logged-out token": gone, "revoked key": revoked, "admin": admin}
        await _settled(client, clock, {})
        got = {}
        for who, credential in credentials.items():
            headers = {"Authorization": f"Bearer {credential}"} if credential else {}
            got[who] = tuple([(await client.post(f"/api/1.1/wf/{name}", headers=headers))
                              .status_code for name in ("open", "members", "staff")])
        assert time.monotonic() - began < 60
        await storage.runs.flush_runs()
        runs = await storage.runs.list_runs(limit=500)
    assert got == EXPECTED
    for secret in (user, old, gone, admin, revoked, "correct horse battery"):
        assert secret not in repr(runs) and secret not in caplog.text
