"""Keeping webhook requests away from internal networks (SSRF).

A target is refused when ANY address its host resolves to is loopback, private, link-local, multicast,
reserved, unspecified, shared (CGNAT) or otherwise not globally routable, or a cloud metadata address.
An IPv6 address that carries an IPv4 one (IPv4-mapped, IPv4-compatible, 6to4, NAT64 64:ff9b::/96) is judged as
the IPv4 address it carries; Teredo and local-use NAT64 (64:ff9b:1::/48) addresses are refused whole.
`AGENTRAIL_WEBHOOK_ALLOW_PRIVATE_TARGETS` (self-hosted installs) lets loopback, private and link-local addresses
through; metadata, multicast and unspecified addresses are refused regardless.

Against DNS rebinding the check is made again when a connection is opened, by
`app.webhooks.transport.PinnedNetworkBackend`: it resolves the host, checks every address, and connects to a
checked address itself, so the address that passed is the one connected to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, …
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IPv6
    }
)


class UnsafeTarget(Exception):
    """The URL may not be requested: bad scheme, or an address on an internal network."""


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: the IPv4 address is the last 32 bits
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local use: where the IPv4 address sits varies
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d (:: and ::1 are judged as themselves)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and that a packet to it would reach (mapped, compatible, 6to4,
    NAT64), or None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_problem(address: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why this address may not be connected to, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        # an address that embeds an IPv4 one is judged as that address, so no IPv6 form of a refused IPv4
        # address gets through; tunnels whose far end cannot be judged here are refused whole
        if address.teredo is not None:
            return "a Teredo tunnel address"
        if address in _NAT64_LOCAL:
            return "a local-use NAT64 address"
        carried = embedded_ipv4(address)
        if carried is not None:
            problem = address_problem(carried, allow_private=allow_private)
            return None if problem is None else f"{problem} (as {carried})"
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_loopback:
        return None if allow_private else "a loopback address"
    if address.is_reserved:  # 240.0.0.0/4 and the like: no one's network (Python counts some as private)
        return "a reserved address"
    if address.is_link_local:
        return None if allow_private else "a link-local address"
    if address.is_private:
        return None if allow_private else "a private address"
    if not address.is_global:
        return "not a public address"
    return None


def check_addresses(host: str, addresses: Iterable[str], *, allow_private: bool) -> list[str]:
    """The addresses, when every one is allowed; UnsafeTarget naming the first that is not."""
    checked = []
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        problem = address_problem(address, allow_private=allow_private)
        if problem is not None:
            raise UnsafeTarget(f"{host} resolves to {address}, {problem}")
        checked.append(str(address))
    if not checked:
        raise UnsafeTarget(f"{host} does not resolve to any address")
    return checked


Resolver = Callable[[str, int], Any]


async def system_resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeTarget(f"{host} does not resolve: {exc}") from None
    seen: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        if sockaddr[0] not in seen:
            seen.append(str(sockaddr[0]))
    return seen


async def resolve_checked(
    host: str, port: int, *, allow_private: bool, resolver: Resolver = system_resolve
) -> list[str]:
    """Resolves `host` and checks every address (an IP literal resolves to itself)."""
    return check_addresses(host, await resolver(host, port), allow_private=allow_private)


def parse_target(url: str, *, require_https: bool) -> httpx.URL:
    """Syntax only: http(s), a host, no credentials; https when required (production)."""
    if len(url) > 2048:
        raise UnsafeTarget("the URL must be at most 2048 characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise UnsafeTarget("not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeTarget("the URL must start with https:// (or http:// outside production)")
    if require_https and parsed.scheme != "https":
        raise UnsafeTarget("the URL must use https in production")
    if not parsed.host:
        raise UnsafeTarget("the URL has no host")
    if parsed.userinfo:
        raise UnsafeTarget("the URL must not carry credentials")
    if parsed.fragment:
        raise UnsafeTarget("the URL must not have a fragment")
    return parsed


async def check_url(
    url: str, *, require_https: bool, allow_private: bool, resolver: Resolver = system_resolve
) -> httpx.URL:
    """The whole check, as made when an endpoint is saved: syntax, then every resolved address."""
    parsed = parse_target(url, require_https=require_https)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    await resolve_checked(parsed.host, port, allow_private=allow_private, resolver=resolver)
    return parsed
