"""Hostile searches through privacy rules, on SQLite and PostgreSQL, through the Data API and
through a workflow's `search` step: no answer (status, body, count, remaining, cursor, the
work done) may depend on a value or a record the caller cannot see.

The attack: a user pads a type with rows of their own, then asks `ssn less than X` for
another user's hidden `ssn`. Were the bound on the records a search judges decided on the
matches (as it was), the answer would flip from results to a refusal as X passes the hidden
value, and about forty searches would read it by bisection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import Serve

from gateway.api.auth import key_hash, new_key
from gateway.compiler.loader import load
from gateway.server.app import create_app
from gateway.storage import Storage, TypeSpec, open_storage

BOUND = 30  # limits.max_privacy_scan
BELOW = """
kind: api_workflow
name: below-TYPE
expose: true
auth: none
params: {ssn: {type: number}, cursor: {type: text, optional: true}}
steps:
  - id: found
    action: search
    type: TYPE
    constraints: [{key: ssn, constraint: less_than, value: "{{ params.ssn }}"}]
    sort: [{key: ssn, descending: true}]
    limit: 7
    cursor: "{{ params.cursor }}"
  - action: return_data
    data: {ssns: "{{ steps.found.results | map(attribute='ssn') | list }}",
           count: "{{ steps.found.count }}", remaining: "{{ steps.found.remaining }}",
           cursor: "{{ steps.found.cursor }}"}
"""
BELOW_PERSON, BELOW_ACCOUNT = (BELOW.replace("TYPE", type) for type in ("person", "account"))
VICTIM_SSN = 500
CONFIG = f"""
kind: settings
limits: {{max_privacy_scan: {BOUND}, privacy_scan_concurrency: 1}}
---
kind: data_type
name: person
api: {{expose: true}}
fields: {{owner: {{type: user}}, name: {{type: text}}, ssn: {{type: number}}}}
privacy:                          # two rules find: judged record by record
  - name: people are listed by name
    when: "{{{{ thing.name }}}}"
    find_in_searches: true
    view_fields: [name]
  - name: owners see and write their own
    when: "{{{{ thing.owner == current_user._id }}}}"
    find_in_searches: true
    view_fields: all
    create_via_api: true
---
kind: data_type
name: account
api: {{expose: true}}
fields: {{owner: {{type: user}}, ssn: {{type: number}}}}
privacy:                          # one rule the database applies
  - name: owners see and write their own
    when: "{{{{ thing.owner == current_user._id }}}}"
    find_in_searches: true
    view_fields: all
    create_via_api: true
---
{BELOW_PERSON}---
{BELOW_ACCOUNT}---
kind: api_workflow
name: signup
expose: true
auth: none
params: {{email: {{type: text}}}}
steps:
  - {{action: signup_user, email: "{{{{ params.email }}}}", password: correct horse battery}}
"""


@dataclass
class World:
    client: httpx.AsyncClient
    storage: Storage
    admin: dict[str, str]
    victim: dict[str, str]
    attacker: dict[str, str]
    attacker_id: str


@pytest.fixture
async def world(serve: Serve, storage_url: str) -> AsyncIterator[World]:
    async with serve(CONFIG, storage_url) as gateway:
        client, storage = gateway.client, gateway.storage
        key = new_key()
        await storage.keys.create_key("admin", key_hash(key), datetime.now(UTC))
        users = [(await client.post("/api/1.1/wf/signup", json={"email": email})).json()
                 ["response"] for email in ("victim@x.io", "attacker@x.io")]
        victim, attacker = (_bearer(user["token"]) for user in users)
        for type in ("person", "account"):
            await _pad(client, type, victim, users[0]["user_id"], [VICTIM_SSN])
        yield World(client, storage, _bearer(key), victim, attacker, users[1]["user_id"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _pad(client: httpx.AsyncClient, type: str, who: dict[str, str], owner: str,
               ssns: list[int]) -> None:
    """Records of `owner`'s own, created through the Data API as any user may."""
    body = "\n".join(json.dumps({"owner": owner, "name": f"n{ssn}", "ssn": ssn}
                                if type == "person" else {"owner": owner, "ssn": ssn})
                     for ssn in ssns)
    answer = await client.post(f"/api/1.1/obj/{type}/bulk", content=body,
                               headers={**who, "Content-Type": "text/plain"})
    assert answer.status_code == 200, answer.text
    assert all(json.loads(line)["status"] == "success" for line in answer.text.splitlines())


async def _data_api(world: World, type: str, ssn: int, cursor: int = 0) -> tuple[int, Any]:
    answer = await world.client.get(f"/api/1.1/obj/{type}", headers=world.attacker, params={
        "constraints": json.dumps([{"key": "ssn", "constraint_type": "less than",
                                    "value": ssn}]),
        "sort_field": "ssn", "descending": "true", "limit": 7, "cursor": cursor})
    return answer.status_code, answer.json()


async def _workflow(world: World, type: str, ssn: int, cursor: str | None = None
                    ) -> tuple[int, Any]:
    params: dict[str, Any] = {"ssn": ssn}
    if cursor is not None:
        params["cursor"] = cursor
    answer = await world.client.post(f"/api/1.1/wf/below-{type}", json=params,
                                     headers=world.attacker)
    return answer.status_code, answer.json()


async def _probes(world: World, type: str) -> list[tuple[int, Any]]:
    """The attacker's answers either side of the hidden value, both ways in: each pair must
    be equal."""
    answers = []
    for probe in (VICTIM_SSN - 1, VICTIM_SSN + 1):
        answers.append(await _data_api(world, type, probe))
        answers.append(await _workflow(world, type, probe))
    return answers


@pytest.mark.parametrize("type", ["person", "account"])
async def test_padding_past_the_bound_tells_nothing_of_a_hidden_value(
        world: World, type: str) -> None:
    # BOUND rows of the attacker's own, all below the victim's ssn: the type now holds one
    # more record than the bound.
    await _pad(world.client, type, world.attacker, world.attacker_id, list(range(BOUND)))
    api_below, flow_below, api_above, flow_above = await _probes(world, type)
    assert [api_below[0], flow_below[0]] == [api_above[0], flow_above[0]]  # the status
    assert api_below == api_above
    assert flow_below == flow_above
    if type == "person":  # judged record by record: refused, on the size of the type alone
        assert api_below[0] == flow_below[0] == 400
        assert flow_below[1]["body"]["status"] == "INVALID_DATA"
        assert "limits.max_privacy_scan" in flow_below[1]["body"]["message"]
    else:  # the database applies the rule: the attacker's own rows, and no more
        assert api_below[1]["response"]["results"][0]["ssn"] == BOUND - 1
        assert flow_below[1]["response"]["count"] == BOUND


@pytest.mark.parametrize("type", ["person", "account"])
async def test_within_the_bound_counts_pages_and_cursors_hold_only_what_the_caller_sees(
        world: World, type: str) -> None:
    mine = list(range(BOUND - 2))  # with the victim's, the type holds fewer than the bound
    await _pad(world.client, type, world.attacker, world.attacker_id, mine)
    api_below, flow_below, api_above, flow_above = await _probes(world, type)
    assert api_below == api_above and flow_below == flow_above
    status, answer = flow_below
    assert status == 200
    assert answer["response"] == {"ssns": mine[::-1][:7], "count": len(mine),
                                  "remaining": len(mine) - 7,
                                  "cursor": answer["response"]["cursor"]}
    status, page = api_below
    assert [r["ssn"] for r in page["response"]["results"]] == mine[::-1][:7]
    assert page["response"]["remaining"] == len(mine) - 7
    # The work done does not depend on the hidden value either: each search judged the
    # same records, and the run log says the rules kept the same ones from it.
    await world.storage.runs.flush_runs()
    for name in (f"below-{type}", f"obj/{type}"):
        runs = await world.storage.runs.list_runs(workflow=name, limit=2)
        assert [run["steps"][0]["hidden_by_privacy"] for run in runs] == [1, 1], name
    seen: list[int] = []  # paging reaches every own record, and only those
    cursor = None
    while True:
        status, answer = await _workflow(world, type, VICTIM_SSN + 1, cursor)
        seen += answer["response"]["ssns"]
        cursor = answer["response"]["cursor"]
        if cursor is None:
            break
    assert seen == mine[::-1]


async def test_a_search_on_a_field_hidden_on_a_record_does_not_match_it(world: World) -> None:
    # The victim's person is found by everyone (by name), but its ssn is hidden from the
    # attacker: a constraint or a sort on ssn leaves it out, so neither can tell its value.
    everyone = await world.client.get("/api/1.1/obj/person", headers=world.attacker)
    assert everyone.json()["response"]["results"] == [
        {"_id": everyone.json()["response"]["results"][0]["_id"], "name": f"n{VICTIM_SSN}"}]
    for probe in (0, VICTIM_SSN + 1, 10**9):
        assert (await _data_api(world, "person", probe))[1]["response"]["results"] == []
    admin = await world.client.get("/api/1.1/obj/person", headers=world.admin, params={
        "constraints": json.dumps([{"key": "ssn", "constraint_type": "less than",
                                    "value": VICTIM_SSN + 1}])})
    assert [r["ssn"] for r in admin.json()["response"]["results"]] == [VICTIM_SSN]


async def test_searches_past_the_concurrency_bound_wait_their_turn(world: World) -> None:
    # One search judges at a time here (limits.privacy_scan_concurrency: 1): the others
    # queue, and each gets the answer it would get alone.
    mine = list(range(BOUND - 2))
    await _pad(world.client, "person", world.attacker, world.attacker_id, mine)
    answers = await asyncio.gather(*(_workflow(world, "person", VICTIM_SSN + 1)
                                     for _ in range(6)))
    expected = {"status": "success", "response": {
        "ssns": mine[::-1][:7], "count": len(mine), "remaining": len(mine) - 7,
        "cursor": answers[0][1]["response"]["cursor"]}}
    assert answers == [(200, expected)] * 6


# --- The server keeps answering while such searches run ----------------------------------------

LOAD = """
kind: data_type
name: board
api: {expose: true}
fields: {title: {type: text}, public: {type: boolean}, rank: {type: number}}
privacy:                          # two rules that find: judged record by record
  - {name: public boards, when: "{{ thing.public }}", find_in_searches: true, view_fields: all}
  - {name: top boards, when: "{{ thing.rank > 990 }}", find_in_searches: true,
     view_fields: [title]}
---
kind: api_workflow
name: count-boards
expose: true
auth: none
steps:                            # no limit: a page of every board the caller finds
  - {id: boards, action: search, type: board}
  - action: return_data
    data: {count: "{{ steps.boards.count }}"}
"""
BOARDS = 3000
SEARCHERS = 4
SAMPLES = 400


async def _fill(url: str, types: Sequence[TypeSpec]) -> None:
    storage = open_storage(url)
    await storage.open(types)
    try:
        for i in range(BOARDS):
            await storage.records.create("board", {"title": f"board {i}", "public": i % 3 == 0,
                                                   "rank": i % 1000})
    finally:
        await storage.close()


@contextlib.contextmanager
def _serving(tmp_path: Path, url: str) -> Iterator[str]:
    """The gateway on a real uvicorn server on loopback (port 0), in a thread; its URL."""
    (tmp_path / "load.yaml").write_text(textwrap.dedent(LOAD).strip())
    registry = load([tmp_path / "load.yaml"])
    asyncio.run(_fill(url, list(registry.data_types.values())))
    app = create_app(registry, open_storage(url))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_for(lambda: server.started or not thread.is_alive(), 30, "the server to start")
    assert thread.is_alive(), "the server stopped as it started"
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        time.sleep(0.01)  # polling a condition, with a deadline that says what it waits for


def test_health_checks_stay_fast_while_four_clients_search_through_rules(
        tmp_path: Path, storage_url: str) -> None:
    """Every search judges the rules on 3,000 boards (tens of ms of CPU). Four clients
    search without pause (two through the Data API, two through a workflow whose search has
    no limit, so that its page of a thousand boards is judged again as it is read) while
    /healthz is timed, one request after another: its p99 must
    stay under 50 ms (the bound the issue sets; without the scans off the event loop, a
    health check waited behind every search in progress, p50 ~200 ms). Generous: the
    judging takes the CPU the health checks do not need."""
    with _serving(tmp_path, storage_url) as url:
        stop = threading.Event()
        searched: list[int] = []

        def search(through_workflow: bool) -> None:
            with httpx.Client(base_url=url, timeout=60) as client:
                while not stop.is_set():
                    if through_workflow:
                        answer = client.post("/api/1.1/wf/count-boards", json={})
                    else:
                        answer = client.get("/api/1.1/obj/board", params={"limit": 100})
                    searched.append(answer.status_code)

        searchers = [threading.Thread(target=search, args=(n % 2 == 1,))
                     for n in range(SEARCHERS)]
        for thread in searchers:
            thread.start()
        try:
            _wait_for(lambda: len(searched) >= SEARCHERS, 60, "a search of each client")
            started = len(searched)
            took = []
            deadline = time.monotonic() + 120
            with httpx.Client(base_url=url, timeout=60) as client:
                # At least SAMPLES checks, and on until each client searched once more.
                while len(took) < SAMPLES or (len(searched) - started < SEARCHERS
                                              and time.monotonic() < deadline):
                    begun = time.perf_counter()
                    assert client.get("/healthz").status_code == 200
                    took.append(time.perf_counter() - begun)
            during = len(searched) - started
        finally:
            stop.set()
            for thread in searchers:
                thread.join(timeout=60)
    assert set(searched) == {200}
    assert during >= SEARCHERS, "the searches ran while /healthz was timed"
    took.sort()
    p50, p99 = took[len(took) // 2], took[math.ceil(len(took) * 0.99) - 1]
    assert p99 < 0.050, f"/healthz p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms " \
                        f"with {during} searches meanwhile"
