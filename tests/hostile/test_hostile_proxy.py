"""`server.trusted_proxies`: behind trusted proxies, the client is the rightmost forwarded
address that is not a proxy, and the scheme the one it used; nothing is believed from any
other peer. Hostile input: headers spoofed by an untrusted peer, by a client through the
proxy, malformed `Forwarded` values, and more hops than any chain of proxies has."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Serve, Served
from console_support import config as console_config

from gateway.console.session import PRE_COOKIE
from gateway.runtime.forwarded import MAX_HOPS, Proxies

PROXY = "10.0.0.5"
CLIENT = "203.0.113.7"
SPOOF = "198.51.100.66"
CONFIG = """
kind: settings
server: {trusted_proxies: [10.0.0.5, "2001:db8:ffff::/48"]}
rate_limits: {shared: true}
---
kind: api_workflow
name: whoami
expose: true
auth: none
rate_limit: {requests: 2, per: 1h, by: ip}
steps:
  - action: return_data
    data: {client: "{{ request.client }}"}
"""


def seen(proxies: Proxies, peer: str, *headers: tuple[str, str]) -> tuple[str, str]:
    """The client and scheme a request from `peer` with `headers` is served as."""
    scope: dict[str, Any] = {"type": "http", "client": (peer, 5000), "scheme": "http",
                             "headers": [(k.encode(), v.encode()) for k, v in headers]}
    proxies.apply(scope)
    return scope["client"][0], scope["scheme"]


XFF = Proxies([PROXY, "10.1.0.0/16"])
FORWARDED = Proxies([PROXY, "10.1.0.0/16"], "forwarded")


def test_an_untrusted_peer_is_the_client_whatever_it_says() -> None:
    headers = [("x-forwarded-for", SPOOF), ("x-forwarded-proto", "https"),
               ("forwarded", f"for={SPOOF};proto=https")]
    assert seen(XFF, CLIENT, *headers) == (CLIENT, "http")
    assert seen(FORWARDED, CLIENT, *headers) == (CLIENT, "http")
    assert seen(XFF, "10.2.0.1", *headers) == ("10.2.0.1", "http")  # next to a proxy's net


def test_the_client_is_the_rightmost_address_that_is_not_a_proxy() -> None:
    assert seen(XFF, PROXY, ("x-forwarded-for", CLIENT)) == (CLIENT, "http")
    # what the client wrote itself, proxies' addresses included, comes to the left
    assert seen(XFF, PROXY, ("x-forwarded-for", f"{SPOOF}, 10.1.0.9, {CLIENT}")) == \
        (CLIENT, "http")
    assert seen(XFF, PROXY, ("x-forwarded-for", f"{SPOOF}, {CLIENT}, 10.1.2.3, 10.1.0.1")) \
        == (CLIENT, "http")
    assert seen(XFF, PROXY, ("x-forwarded-for", SPOOF), ("x-forwarded-for",
                                                         f"{CLIENT}, 10.1.0.1")) == \
        (CLIENT, "http")  # several lines are one list
    assert seen(XFF, PROXY, ("x-forwarded-for", "10.1.0.2, 10.1.0.1")) == ("10.1.0.2", "http")
    assert seen(XFF, f"::ffff:{PROXY}", ("x-forwarded-for", CLIENT)) == (CLIENT, "http")


@pytest.mark.parametrize(("value", "client"), [
    (f"{CLIENT}:4711", CLIENT),
    ("[2001:db8::7]:4711", "2001:db8::7"),
    ("2001:DB8::7", "2001:db8::7"),
    ("fe80::1%eth0", "fe80::1"),
    (f"{CLIENT}, not-an-address", PROXY),  # the proxy wrote no address: itself
    ("", PROXY),
    (" , ,", PROXY),
    (f"{CLIENT}, unknown, 10.1.0.1", "10.1.0.1"),  # the walk ends at the proxy after it
    ("[2001:db8::7", PROXY),
    ("[2001:db8::7]x", PROXY),
    ("1" * 10_000, PROXY),
])
def test_what_is_not_an_address_is_nobody(value: str, client: str) -> None:
    assert seen(XFF, PROXY, ("x-forwarded-for", value))[0] == client


def test_the_scheme_is_the_one_the_client_used() -> None:
    assert seen(XFF, PROXY, ("x-forwarded-for", CLIENT), ("x-forwarded-proto", "HTTPS")) == \
        (CLIENT, "https")
    # one proxy set it, the next passed it on; each appended its own
    assert seen(XFF, PROXY, ("x-forwarded-for", f"{CLIENT}, 10.1.0.1"),
                ("x-forwarded-proto", "https")) == (CLIENT, "https")
    assert seen(XFF, PROXY, ("x-forwarded-for", f"{CLIENT}, 10.1.0.1"),
                ("x-forwarded-proto", "https, http")) == (CLIENT, "https")
    for junk in ("javascript", "https://x", "", "ftp", "https\r\nx"):
        assert seen(XFF, PROXY, ("x-forwarded-for", CLIENT), ("x-forwarded-proto", junk)) \
            == (CLIENT, "http"), junk


def test_forwarded_is_read_as_rfc_7239_and_only_when_named() -> None:
    value = f'for={SPOOF};proto=http, for="[2001:db8::7]:4711";proto=https;by=10.0.0.5'
    assert seen(FORWARDED, PROXY, ("forwarded", value)) == ("2001:db8::7", "https")
    assert seen(FORWARDED, PROXY, ("forwarded", f"For={CLIENT}, for=10.1.0.1;proto=https")) \
        == (CLIENT, "http")  # each hop's own proto
    # the header the proxies do not write is whatever the client sent: never read
    assert seen(FORWARDED, PROXY, ("x-forwarded-for", SPOOF), ("forwarded", f"for={CLIENT}")) \
        == (CLIENT, "http")
    assert seen(XFF, PROXY, ("forwarded", f"for={SPOOF}"), ("x-forwarded-for", CLIENT)) == \
        (CLIENT, "http")


@pytest.mark.parametrize(("value", "client"), [
    (f'for="{SPOOF}, for={CLIENT};proto=https', CLIENT),  # a quote the client left open
    (f';;==, =;for, for={CLIENT}', CLIENT),
    ("for=unknown", PROXY),
    ("for=_hidden;proto=https", PROXY),
    (f"proto=https;by={CLIENT}", PROXY),
    (f'for="{CLIENT}', PROXY),
    ('for="[2001:db8::7]:4711', PROXY),
    ("for=" + "a" * 5000, PROXY),
    ("\x00\xff;=,", PROXY),
])
def test_a_malformed_forwarded_header_proves_nothing(value: str, client: str) -> None:
    assert seen(FORWARDED, PROXY, ("forwarded", value))[0] == client


def test_many_hops_are_read_from_the_right_only() -> None:
    spoofed = ", ".join(f"198.51.{n // 256 % 256}.{n % 256}" for n in range(100_000))
    assert seen(XFF, PROXY, ("x-forwarded-for", f"{spoofed}, {CLIENT}")) == (CLIENT, "http")
    lines = [("x-forwarded-for", SPOOF)] * 5000 + [("x-forwarded-for", CLIENT)]
    assert seen(XFF, PROXY, *lines) == (CLIENT, "http")
    proxies = ", ".join(f"10.1.0.{n % 250 + 1}" for n in range(100))
    # more proxies than are read: the leftmost read stands for the client
    assert seen(XFF, PROXY, ("x-forwarded-for", f"{CLIENT}, {proxies}"))[0] == \
        f"10.1.0.{(100 - MAX_HOPS) % 250 + 1}"
    hops = ", ".join(f"for={SPOOF}" for _ in range(50_000))
    assert seen(FORWARDED, PROXY, ("forwarded", f"{hops}, for={CLIENT}")) == (CLIENT, "http")


async def whoami(gateway: Served, peer: str, **headers: str) -> httpx.Response:
    async with gateway.connect((peer, 5000)) as client:
        return await client.post("/api/1.1/wf/whoami", headers={
            name.replace("_", "-"): value for name, value in headers.items()})


async def test_rate_limits_and_runs_count_the_client_behind_the_proxy(
        serve: Serve, storage_url: str) -> None:
    async with serve(CONFIG, storage_url) as gateway:
        ada = [await whoami(gateway, PROXY, x_forwarded_for=f"{SPOOF}, 203.0.113.1")
               for _ in range(3)]
        bo = [await whoami(gateway, peer, x_forwarded_for="203.0.113.2")
              for peer in (PROXY, "2001:db8:ffff::9", PROXY)]
        # an untrusted peer's headers change nothing: one address, one count
        spoofer = [await whoami(gateway, SPOOF, x_forwarded_for=f"192.0.2.{n}")
                   for n in range(3)]
        await gateway.storage.runs.flush_runs()
        runs = await gateway.storage.runs.list_runs(limit=10)
    assert [r.status_code for r in ada] == [r.status_code for r in bo] == \
        [r.status_code for r in spoofer] == [200, 200, 429]
    assert [r.json()["response"]["client"] for r in (ada[0], bo[0], spoofer[0])] == \
        ["203.0.113.1", "203.0.113.2", SPOOF]
    assert sorted(run["client"] for run in runs) == \
        sorted(["203.0.113.1"] * 2 + ["203.0.113.2"] * 2 + [SPOOF] * 2)


async def test_without_trusted_proxies_the_peer_is_the_client(serve: Serve) -> None:
    config = textwrap.dedent(CONFIG).strip().replace(
        "server: {trusted_proxies: [10.0.0.5, \"2001:db8:ffff::/48\"]}\n", "")
    async with serve(config, stored=False) as gateway:
        answer = await whoami(gateway, PROXY, x_forwarded_for=CLIENT, x_forwarded_proto="https")
    assert answer.json()["response"]["client"] == PROXY


@pytest.mark.parametrize(("peer", "secure"), [(PROXY, True), (SPOOF, False)])
async def test_the_console_cookie_is_secure_behind_a_tls_proxy(
        serve: Serve, tmp_path: Path, storage_url: str, peer: str, secure: bool) -> None:
    folder = console_config(tmp_path, server=f"server: {{trusted_proxies: [{PROXY}]}}")
    async with serve(folder, storage_url, scheduler=False, peer=(peer, 5000)) as gateway:
        form = await gateway.client.get("/console/sign-in", headers={
            "x-forwarded-for": CLIENT, "x-forwarded-proto": "https"})
    cookie = form.headers["set-cookie"]
    assert cookie.startswith(PRE_COOKIE + "=") and form.status_code == 200
    assert ("; secure" in cookie.lower()) is secure, cookie
