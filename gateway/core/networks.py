"""Addresses and networks as settings name them (`server.trusted_proxies`,
`tracing.trust_parent`), and whether a peer is in them."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_HOP = 100  # characters of an address worth parsing


def parse_address(text: str) -> IPAddress | None:
    """An IP address as a forwarded header gives it (`203.0.113.7`, `203.0.113.7:4711`,
    `2001:db8::1`, `[2001:db8::1]:4711`), or None for anything else."""
    text = text.strip()
    if not text or len(text) > MAX_HOP:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1:] and not text[end + 1:].startswith(":")):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # without an IPv6 zone
    except ValueError:
        return None


class Networks:
    """Addresses and networks (`10.0.0.5`, `10.0.0.0/8`, `2001:db8::/32`), validated when
    the config was compiled; an IPv4 peer of a dual-stack socket counts as its IPv4 address."""

    def __init__(self, networks: Sequence[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def trusts(self, address: IPAddress | str) -> bool:
        if isinstance(address, str):
            found = parse_address(address)
            if found is None:
                return False
            address = found
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.networks)
