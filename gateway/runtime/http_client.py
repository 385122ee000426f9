"""The process's outbound HTTP client: pooled, no proxy from the environment, no redirects
followed. With `http.block_private_addresses`, its connections go through `GuardedBackend`:
the host is resolved, every address it resolves to must be public, and the connection is
made to an address that was checked (so a name that resolves differently a moment later
cannot slip through). Nothing is sent to a refused address.

Imported when a process first calls out (`Services.http`): httpx and its pool cost a
process some 4 MiB that one whose workflows never call out does not pay.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from gateway.core.encoding import escape
from gateway.core.settings import Settings

log = logging.getLogger("gateway.http")
USER_AGENT = "workflow-gateway"
MAX_CONNECTIONS = 100


class BlockedAddressError(httpcore.ConnectError):
    """A request to a loopback, private, link-local or otherwise non-public address."""


# IPv6 ranges that carry an IPv4 address in their last 32 bits, judged by that address: the
# NAT64 prefix (a NAT64 gateway would connect to it), the IPv4-compatible and the SIIT forms.
_WRAPPING = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96"),
             ipaddress.ip_network("::ffff:0:0:0/96"))
# Ranges that are not public which this Python's `is_global` may not know of: local-use
# NAT64, site-local, documentation (3fff::/20) and segment-routing ids.
_NOT_PUBLIC = (ipaddress.ip_network("64:ff9b:1::/48"), ipaddress.ip_network("fec0::/10"),
               ipaddress.ip_network("3fff::/20"), ipaddress.ip_network("5f00::/16"))


def is_public(address: str) -> bool:
    """Whether an IP address is one that `block_private_addresses` lets through."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in network for network in _NOT_PUBLIC):
            return False
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is None and any(ip in network for network in _WRAPPING):
            mapped = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
        if mapped is not None:
            ip = mapped
    return ip.is_global and not ip.is_multicast


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that connects only to public addresses."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self.inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host, port)
        refused = [address for address in addresses if not is_public(address)]
        if refused or not addresses:
            # which address, for the operator only: a caller is not told the inside's map
            log.warning("http_request to %s refused: it resolves to %s", escape(host),
                        escape(", ".join(refused)))
            raise BlockedAddressError(
                f"{host} resolves to a non-public address and http.block_private_addresses "
                "is set")
        # TLS still checks the certificate against `host`: httpcore passes it as the SNI.
        return await self.inner.connect_tcp(addresses[0], port, timeout, local_address,
                                            socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddressError("unix sockets are refused: http.block_private_addresses")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def http_client(settings: Settings) -> httpx.AsyncClient:
    """The process's client: pooled, no proxy from the environment, no redirects followed."""
    transport = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=MAX_CONNECTIONS), trust_env=False)
    if settings.http_block_private_addresses:
        # httpx takes no network backend; its pool (httpcore) does.
        pool = transport._pool
        pool._network_backend = GuardedBackend(pool._network_backend)
    return httpx.AsyncClient(transport=transport, trust_env=False, follow_redirects=False,
                             headers={"User-Agent": USER_AGENT},
                             timeout=settings.http_timeout.total_seconds())
