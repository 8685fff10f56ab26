"""The SSRF guard: which addresses the gateway may open a connection to for an upstream.

Link-local addresses (where clouds serve instance metadata and credentials) and the known
metadata addresses are never upstreams. Everything else follows `UPSTREAM_DENY_CIDRS`, with
`UPSTREAM_ALLOW_CIDRS` as exceptions to it. The clients check the address of every
connection they open, after resolving the name, so a name that later resolves elsewhere
(DNS rebinding) is refused at that connection too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import aiohttp

if TYPE_CHECKING:
    from gateway.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
P = TypeVar("P", bound=asyncio.BaseProtocol)

ALWAYS_REFUSED: tuple[tuple[Network, str], ...] = (
    (ipaddress.ip_network("169.254.0.0/16"), "link-local addresses are never upstreams"),
    (ipaddress.ip_network("fe80::/10"), "link-local addresses are never upstreams"),
    (ipaddress.ip_network("fd00:ec2::254/128"), "cloud metadata addresses are never upstreams"),
    (ipaddress.ip_network("100.100.100.200/32"), "cloud metadata addresses are never upstreams"),
    # "This host": a connection to 0.0.0.0 or :: reaches the gateway's own machine, which
    # would get around a deny rule for loopback.
    (ipaddress.ip_network("0.0.0.0/8"), "unspecified addresses are never upstreams"),
    (ipaddress.ip_network("::/128"), "unspecified addresses are never upstreams"),
)


class AddressRefused(OSError):
    """An upstream's address is one the gateway may not connect to."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        # aiohttp's connection error shows `strerror` only.
        self.strerror = message


def networks(texts: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)


@dataclass(frozen=True)
class AddressPolicy:
    deny: tuple[Network, ...] = ()
    allow: tuple[Network, ...] = ()
    """Exceptions to `deny`; never to `ALWAYS_REFUSED`."""

    @classmethod
    def of(cls, settings: Settings) -> AddressPolicy:
        return cls(
            deny=networks(settings.upstream_deny_cidrs),
            allow=networks(settings.upstream_allow_cidrs),
        )

    def refusal(self, address: Address) -> str | None:
        """Why the gateway may not connect to `address`, or None when it may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for network, rule in ALWAYS_REFUSED:
            if address.version == network.version and address in network:
                return f"{rule} ({network})"
        if any(address.version == n.version and address in n for n in self.allow):
            return None
        for network in self.deny:
            if address.version == network.version and address in network:
                return f"{network} is in UPSTREAM_DENY_CIDRS"
        return None

    def check(self, host: str, sockaddr: tuple[Any, ...]) -> None:
        # An IPv6 address may carry a zone ("fe80::1%eth0"), which ipaddress reads too.
        address = ipaddress.ip_address(str(sockaddr[0]))
        why = self.refusal(address)
        if why is not None:
            shown = host if host == str(address) else f"{host} ({address})"
            raise AddressRefused(f"address {shown} refused: {why}")

    async def resolve(self, host: str, port: int) -> list[tuple[Any, ...]]:
        """The addresses of `host`, every one checked: one refused address refuses all."""
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for info in infos:
            self.check(host, info[4])
        return infos

    async def check_url(self, url: str) -> None:
        """Refuse `url` if its host resolves to a refused address; a name that does not
        resolve is left to the connection, which reports it."""
        parts = urlsplit(url)
        if not parts.hostname:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname, parts.port or 0, type=socket.SOCK_STREAM
            )
        except OSError:
            return
        for info in infos:
            self.check(parts.hostname, info[4])

    async def connect(
        self,
        factory: Callable[[], P],
        host: str,
        port: int,
        context: Any,
    ) -> tuple[asyncio.Transport, P]:
        """`loop.create_connection` to a checked address of `host`, trying each in turn."""
        loop = asyncio.get_running_loop()
        failure: OSError | None = None
        for family, _, proto, _, sockaddr in await self.resolve(host, port):
            try:
                transport, protocol = await loop.create_connection(
                    factory,
                    sockaddr[0],
                    sockaddr[1],
                    family=family,
                    proto=proto,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
            except OSError as exc:
                failure = exc
                continue
            return transport, protocol
        raise failure or OSError(f"{host} has no address")

    def socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """A socket for a checked address only: aiohttp's `socket_factory`, which it calls
        for every address it tries, resolved names and literal addresses alike."""
        family, kind, proto, _, sockaddr = addr_info
        self.check(str(sockaddr[0]), sockaddr)
        return socket.socket(family, kind, proto)


def guarded_connector(policy: AddressPolicy, **options: Any) -> aiohttp.TCPConnector:
    """An aiohttp connector that connects to checked addresses only."""
    return aiohttp.TCPConnector(socket_factory=policy.socket, **options)
