"""Who a caller is on the network: its address behind trusted proxies, and the network its
address counts as when callers are counted by address.

Behind a proxy every connection comes from the proxy. `server.trusted_proxies` names the
addresses and networks of the proxies the gateway sits behind; from one of those (and only
from those) the request's forwarded header is believed: `X-Forwarded-For` with
`X-Forwarded-Proto`, or the standard `Forwarded` (`server.forwarded_header` says which one
the proxies write: a proxy passes the other through as the client sent it). Each proxy
appends the address it received the request from, so the client is the rightmost address
that is not a trusted proxy: everything to its left was written by the client and proves
nothing. A hop that is not an address ends the walk at the proxy that wrote it. Only the
last `MAX_HOPS` hops are read, whatever the header holds.

The ASGI scope's `client` and `scheme` are rewritten before anything reads them, so rate
limits, log-in limits, `request.client` in templates, the run log and the console's cookies
all see the client and the scheme it used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import MutableMapping, Sequence
from typing import Any

from gateway.core.networks import IPAddress, Networks, parse_address

HEADERS = ("x-forwarded-for", "forwarded")  # what `server.forwarded_header` may name
MAX_HOPS = 32  # hops read from the right of a forwarded list
SCHEMES = frozenset({"http", "https"})


def network(client: str | None) -> str:
    """What a caller counts as when callers are counted by address: its IPv4 address, or
    its IPv6 address's /64 (one subscriber's, which holds more addresses than a counter
    could track)."""
    if client is None:
        return "?"
    if ":" not in client:
        return client
    try:
        address = ipaddress.IPv6Address(client.split("%", 1)[0])
    except ValueError:
        return client
    if address.ipv4_mapped is not None:  # an IPv4 caller of a dual-stack socket
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class Proxies(Networks):
    """The trusted proxies (`server.trusted_proxies`) and the header they write."""

    def __init__(self, networks: Sequence[str], header: str = "x-forwarded-for") -> None:
        super().__init__(networks)
        self.header = header.encode("latin-1")
        self._forwarded = header == "forwarded"

    def apply(self, scope: MutableMapping[str, Any]) -> None:
        """The scope's `client` and `scheme` made the forwarded ones, when its peer is a
        trusted proxy that forwarded them; otherwise left as they are."""
        peer = scope.get("client")
        if not peer or not self.trusts(str(peer[0])):
            return
        values = [bytes(v).decode("latin-1") for k, v in scope["headers"] if k == self.header]
        if not values:
            return
        hops = _rightmost(values)
        if self._forwarded:
            elements = [_element(hop) for hop in hops]
            found = self._client([e.get("for", "") for e in elements])
            proto = elements[-1 - found[1]].get("proto", "") if found else ""
        else:
            found = self._client(hops)
            proto = _proto(scope, found[1]) if found else ""
        if found is None:
            return
        scope["client"] = (str(found[0]), 0)
        if proto.strip().lower() in SCHEMES:
            scope["scheme"] = proto.strip().lower()

    def _client(self, hops: list[str]) -> tuple[IPAddress, int] | None:
        """The rightmost hop that is not a trusted proxy, and its place from the right;
        None when the rightmost hop is no address."""
        found: tuple[IPAddress, int] | None = None
        for index, hop in enumerate(reversed(hops)):
            address = parse_address(hop)
            if address is None:
                break  # the proxy to its right wrote something else: the walk ends there
            found = (address, index)
            if not self.trusts(address):
                break
        return found


def _rightmost(values: list[str]) -> list[str]:
    """The last `MAX_HOPS` comma-separated hops of a header's lines, left to right. A comma
    inside a quoted value splits it too: no address holds one, and a client cannot hide
    the hops the proxies appended inside a quote it leaves open."""
    hops = ",".join(values).rsplit(",", MAX_HOPS)
    return hops[1:] if len(hops) > MAX_HOPS else hops


def _element(hop: str) -> dict[str, str]:
    """One `Forwarded` element's parameters (`for=…;proto=…`), names in lower case and
    quotes taken off; a malformed pair is left out."""
    found: dict[str, str] = {}
    for pair in hop.split(";"):
        name, sep, value = pair.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if sep:
            found.setdefault(name.strip().lower(), value)
    return found


def _proto(scope: MutableMapping[str, Any], place: int) -> str:
    """The `X-Forwarded-Proto` of the hop `place` from the right, as the proxies appended
    them; a shorter list's first entry (one proxy set it, the others passed it on)."""
    values = [bytes(v).decode("latin-1") for k, v in scope["headers"]
              if k == b"x-forwarded-proto"]
    if not values:
        return ""
    protos = _rightmost(values)
    return protos[-1 - place] if place < len(protos) else protos[0]
