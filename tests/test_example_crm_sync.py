"""examples/crm-sync served with a CRM on loopback and a clock the test sets: a burst of
edits to one contact makes one call to the CRM, with the last edit's data, its debounce
period after the last edit, and the run that scheduled over a waiting sync says so; the
contacts of one account are pushed at most five per second of the clock, oldest due first.
(`test_examples.py` validates the example and runs its workflow tests with the others.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from conftest import Serve
from support import EXAMPLES, Clock

from gateway.api.auth import key_hash, new_key
from gateway.storage import Storage

CRM_SYNC = EXAMPLES / "crm-sync"
TOKEN = "crm-example-token"
PERIOD = timedelta(seconds=10)  # the example's debounce period


@dataclass(frozen=True)
class Call:
    """One call the CRM got, and the test clock's time when it came."""

    at: datetime
    method: str
    path: str
    authorization: str
    body: Any


@contextlib.contextmanager
def crm_api(clock: Clock) -> Iterator[tuple[str, list[Call]]]:
    """A real HTTP server on loopback standing in for the CRM: it keeps every call and
    answers each with the contact's id; its URL and the calls."""
    calls: list[Call] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_PUT(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
            calls.append(Call(clock.now, "PUT", self.path,
                              self.headers.get("authorization", ""), body))
            answer = json.dumps({"id": self.path.rsplit("/", 1)[-1]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Crm:
    """The example served, its admin key's header, its store, the clock and the CRM's
    calls."""

    client: httpx.AsyncClient
    auth: dict[str, str]
    storage: Storage
    clock: Clock
    calls: list[Call]

    async def change(self, contact: str, **fields: Any) -> httpx.Response:
        answer = await self.client.post("/api/1.1/wf/contact-changed", headers=self.auth,
                                        json={"account": "acme", "contact": contact,
                                              "email": f"{contact}@example.com", **fields})
        assert answer.status_code == 202, answer.text
        return answer

    async def settled(self, statuses: list[str]) -> None:
        """Wait until the sync jobs' statuses (sorted) are `statuses`, for at most 20 s: the
        scheduler of the app's lifespan works on its own."""
        got: list[str] = []
        try:
            async with asyncio.timeout(20):
                while got != statuses:
                    jobs = await self.storage.jobs.list_jobs(workflow="sync-contact", limit=100)
                    got = sorted(job.status for job in jobs)
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"waited 20 s for the syncs to be {statuses}; "
                                 f"they are {got}") from None


@pytest.fixture
async def crm(serve: Serve) -> AsyncIterator[Crm]:
    clock = Clock()
    with crm_api(clock) as (url, calls):
        async with serve(CRM_SYNC, environment={"CRM_API_URL": url, "CRM_API_TOKEN": TOKEN},
                         clock=clock, monotonic=clock.monotonic) as gateway:
            assert gateway.storage is not None
            key = new_key()
            await gateway.storage.keys.create_key("crm", key_hash(key), clock.now)
            yield Crm(gateway.client, {"Authorization": f"Bearer {key}"}, gateway.storage,
                      clock, calls)


async def test_a_burst_of_edits_syncs_once_with_the_latest_data(crm: Crm) -> None:
    for name in ("Ada", "Ada L.", "Ada Lovelace"):
        last = await crm.change("c-0", name=name)
        crm.clock.now += timedelta(seconds=2)
    (job,) = await crm.storage.jobs.list_jobs(workflow="sync-contact")
    assert job.status == "pending" and job.data["params"]["name"] == "Ada Lovelace"
    assert job.due_at == crm.clock.now - timedelta(seconds=2) + PERIOD
    await crm.storage.runs.flush_runs()
    run = await crm.storage.runs.get_run(last.headers["x-run-id"])
    assert run is not None and run["flow"] == [
        "a job of 'sync-contact' debounced: the job waiting with its key 'c-0' runs instead, "
        "with the latest params"]

    crm.clock.now = job.due_at  # due now: the scheduler's next poll runs it
    await crm.settled(["done"])
    assert crm.calls == [Call(job.due_at, "PUT", "/accounts/acme/contacts/c-0",
                              f"Bearer {TOKEN}", {"email": "c-0@example.com",
                                                  "name": "Ada Lovelace", "phone": None})]


async def test_an_account_is_pushed_five_contacts_a_second(crm: Crm) -> None:
    for n in range(12):
        await crm.change(f"c-{n}")
        crm.clock.now += timedelta(milliseconds=10)  # each due after the one before
    crm.clock.now += PERIOD
    for started in (5, 10, 12):  # a second of the clock at a time
        await crm.settled(["done"] * started + ["pending"] * (12 - started))
        assert len(crm.calls) == started
        crm.clock.now += timedelta(seconds=1)
    windows: dict[datetime, set[str]] = {}
    for call in crm.calls:
        windows.setdefault(call.at, set()).add(call.path.rsplit("/", 1)[-1])
    assert list(windows.values()) == [{f"c-{n}" for n in range(5)},
                                      {f"c-{n}" for n in range(5, 10)}, {"c-10", "c-11"}]

