"""Guessing passwords and admin keys concurrently, on both backends: attempts on one e-mail
address run one at a time (a few waiting, the rest refused at once), each slowed by the
failures before it, however many arrive together; failures from one client address are
bounded across e-mail addresses; the console's sign-in is held to the same."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest
from conftest import served
from console_support import config as console_config
from console_support import form_value
from starlette.applications import Starlette

from gateway.console.session import FREE_FAILURES as CONSOLE_FREE_FAILURES
from gateway.console.session import throttle
from gateway.core.errors import RateLimitedError
from gateway.runtime.accounts import FREE_FAILURES, MAX_DELAY, QUEUE, Logins
from gateway.runtime.login_throttle import FailureBudget

PROXY = "10.0.0.5"
PASSWORD = "correct horse"
CONFIG = """
kind: settings
server: {trusted_proxies: [10.0.0.5]}
tokens: {address_failures: {failures: 5, per: 1h}}
---
kind: api_workflow
name: join
expose: true
auth: none
params: {email: {type: text}, password: {type: text}}
steps:
  - action: signup_user
    email: "{{ params.email }}"
    password: "{{ params.password }}"
---
kind: api_workflow
name: login
expose: true
auth: none
params: {email: {type: text}, password: {type: text}}
steps:
  - action: login_user
    email: "{{ params.email }}"
    password: "{{ params.password }}"
"""


class Gate:
    """How the throttle waits out its delays here: each delay is noted, and none of them
    ends before the test opens the gate."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.opened = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        await self.opened.wait()


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, url: str, logins: Logins
                  ) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    async with served(CONFIG, url, home=tmp_path, peer=(PROXY, 5000)) as gateway:
        app = gateway.app
        app.state.logins = app.state.interpreter.accounts.logins = logins
        yield app, gateway.client


async def login(client: httpx.AsyncClient, email: str, password: str,
                address: str) -> httpx.Response:
    """A log-in from `address`, through the trusted proxy."""
    return await client.post("/api/1.1/wf/login", json={"email": email, "password": password},
                             headers={"x-forwarded-for": address})


def status(answer: httpx.Response) -> str:
    return str(answer.json().get("body", {}).get("status", answer.status_code))


async def answered(tasks: Sequence[asyncio.Task[httpx.Response]], count: int,
                   timeout: float = 30.0) -> list[httpx.Response]:
    """The answers of the first `count` tasks to end, waited for up to `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = set(tasks)
    while len(tasks) - len(pending) < count:
        left = deadline - loop.time()
        assert left > 0, f"only {len(tasks) - len(pending)} of {count} answers came"
        _, pending = await asyncio.wait(pending, timeout=left,
                                        return_when=asyncio.FIRST_COMPLETED)
    return [task.result() for task in tasks if task.done()]


async def test_parallel_guesses_on_one_email_take_their_turns(tmp_path: Path,
                                                              storage_url: str) -> None:
    gate = Gate()
    logins = Logins(sleep=gate.sleep)
    async with serving(tmp_path, storage_url, logins) as (_, client):
        joined = await client.post("/api/1.1/wf/join", json={"email": "ada@example.com",
                                                              "password": PASSWORD})
        assert joined.status_code == 200, joined.text
        for n in range(FREE_FAILURES):  # the free failures: no delay yet
            assert status(await login(client, "ada@example.com", "nope", f"192.0.2.{n}")) \
                == "INVALID_LOGIN_CREDENTIALS"
        # 150 guesses at once, each from an address of its own (so no address is bounded)
        guesses = [asyncio.create_task(login(client, "ADA@example.com", f"guess {n}",
                                             f"198.51.{n // 200}.{n % 200 + 1}"))
                   for n in range(150)]
        refused = await answered(guesses, 150 - (QUEUE + 1))
        assert {status(a) for a in refused} == {"RATE_LIMITED"}
        assert all(int(a.headers["retry-after"]) >= 1 for a in refused)
        # one attempt waits out its delay, QUEUE more wait their turn behind it
        assert logins.emails.in_flight("ada@example.com") == QUEUE + 1
        assert gate.delays == [0.25]
        right = await login(client, "ada@example.com", PASSWORD, "203.0.113.50")
        assert status(right) == "RATE_LIMITED"  # the right password waits like any guess
        gate.opened.set()
        ran = await asyncio.gather(*guesses)
        # one at a time, each after the failure before it: the delay doubles every time
        assert gate.delays == [0.25, 0.5, 1.0, 2.0, 4.0]
        assert sorted(status(a) for a in ran).count("INVALID_LOGIN_CREDENTIALS") == QUEUE + 1
        later = await login(client, "ada@example.com", PASSWORD, "203.0.113.50")
    assert later.status_code == 200, later.text  # after its own delay, the longest
    assert gate.delays[-1] == MAX_DELAY


async def test_failures_from_one_address_are_bounded_across_emails(tmp_path: Path,
                                                                  storage_url: str) -> None:
    clock = Clock()
    logins = Logins(monotonic=clock)
    async with serving(tmp_path, storage_url, logins) as (_, client):
        joined = await client.post("/api/1.1/wf/join", json={"email": "ada@example.com",
                                                              "password": PASSWORD})
        assert joined.status_code == 200, joined.text
        sprayed = await asyncio.gather(*(
            login(client, f"user{n}@example.com", PASSWORD, "203.0.113.9") for n in range(30)))
        same_address = await login(client, "ada@example.com", PASSWORD, "203.0.113.9")
        other_address = await login(client, "ada@example.com", PASSWORD, "203.0.113.10")
        over_ipv6 = await login(client, "ada@example.com", PASSWORD, "2001:db8:1:2::7")
        clock.now += 12 * 60  # a fifth of the hour: room for one failure more
        drained = await login(client, "ada@example.com", PASSWORD, "203.0.113.9")
    counted = sorted(status(a) for a in sprayed)
    assert counted == ["INVALID_LOGIN_CREDENTIALS"] * 5 + ["RATE_LIMITED"] * 25, counted
    assert status(same_address) == "RATE_LIMITED"
    assert int(same_address.headers["retry-after"]) == 12 * 60
    assert other_address.status_code == over_ipv6.status_code == 200
    assert drained.status_code == 200, drained.text


async def test_an_ipv6_network_is_one_address(tmp_path: Path, storage_url: str) -> None:
    logins = Logins()
    async with serving(tmp_path, storage_url, logins) as (_, client):
        answers = [await login(client, "nobody@example.com", "x", f"2001:db8:1:2::{n + 1:x}")
                   for n in range(6)]
    assert [status(a) for a in answers] == ["INVALID_LOGIN_CREDENTIALS"] * 5 + ["RATE_LIMITED"]


async def test_parallel_console_sign_ins_take_their_turns(tmp_path: Path,
                                                          storage_url: str) -> None:
    gate = Gate()
    async with served(console_config(tmp_path), storage_url, scheduler=False,
                      peer=("203.0.113.9", 5000)) as gateway:
        gateway.app.state.console.throttle = slowdown = throttle(sleep=gate.sleep)
        client = gateway.client
        token = form_value((await client.get("/console/sign-in")).text, "token")

        async def sign_in(key: str) -> httpx.Response:
            return await client.post("/console/sign-in", data={"key": key, "token": token})

        for _ in range(CONSOLE_FREE_FAILURES):
            assert (await sign_in("wrong")).status_code == 401
        tries = [asyncio.create_task(sign_in(f"guess {n}")) for n in range(20)]
        refused = await answered(tries, 20 - (QUEUE + 1))
        assert {a.status_code for a in refused} == {429}
        assert all("Too many sign-ins from this address" in a.text for a in refused)
        assert slowdown.in_flight("203.0.113.9") == QUEUE + 1
        gate.opened.set()
        ran = await asyncio.gather(*tries)
    assert sorted(a.status_code for a in ran).count(401) == QUEUE + 1
    assert gate.delays == [0.25, 0.5, 1.0, 2.0, 4.0]


async def test_failures_from_many_addresses_do_not_free_one_being_bounded() -> None:
    clock = Clock()
    budget = FailureBudget(tracked=100, monotonic=clock)

    async def fail(key: str) -> None:
        async with budget.turn(key, 5, 3600) as turn:
            turn.ok = False

    for _ in range(5):
        await fail("203.0.113.9")
    for n in range(1000):  # each address once: far more than are tracked
        await fail(f"198.51.{n // 250}.{n % 250}")
    with pytest.raises(RateLimitedError) as refused:
        async with budget.turn("203.0.113.9", 5, 3600):
            pass
    assert refused.value.retry_after == 720
