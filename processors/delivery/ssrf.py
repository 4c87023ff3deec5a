"""Server-side request forgery guard for webhook URLs.

Organizations configure webhook endpoints; the dispatcher POSTs to them from inside the platform's network. Without
a guard an endpoint could point at the cloud metadata service, the database, the broker or any other internal
address. `EgressPolicy` says which addresses are refused:

* always: schemes other than http/https, unspecified (0.0.0.0, ::), multicast, reserved/broadcast, and the
  metadata services (169.254.169.254, fd00:ec2::254, 100.100.100.200);
* unless `allow_private` (setting DELIVERY_WEBHOOK_ALLOW_PRIVATE, for local runs and tests whose receivers listen
  on loopback): loopback (and `localhost` names), link-local, private (RFC 1918, unique-local), shared (CGNAT) and
  every other address that is not globally routable.

The check runs twice: `check_url` on the URL as configured (`check_endpoint` adds a DNS lookup, for the
configuration step), and at delivery time after DNS resolution, inside the HTTP client (`GuardedResolver`, used by
`guarded_session`), on exactly the addresses the connection will use, so a name that resolves elsewhere later (DNS
rebinding) is caught too. Redirects are not followed. A refusal is a `RefusedTargetError`: never retried.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from processors.delivery.errors import RefusedTargetError, RejectedError, UnreachableError

__all__ = ["EgressPolicy", "GuardedResolver", "check_endpoint", "check_url", "guarded_session"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = frozenset({"http", "https"})
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Where webhooks may go; `allow_private` lets loopback, link-local and private networks through."""

    allow_private: bool = False

    def refusal(self, address: Address) -> str | None:
        """The reason code that refuses `address`, or None when it may be used."""
        if isinstance(address, ipaddress.IPv6Address):
            embedded = address.ipv4_mapped or address.sixtofour
            if embedded is not None:
                return self.refusal(embedded)
        if address.is_unspecified:
            return "address_unspecified"
        if address in METADATA:
            return "address_metadata"
        if address.is_multicast:
            return "address_multicast"
        if address.is_loopback:
            return None if self.allow_private else "address_loopback"
        if address.is_link_local:
            return None if self.allow_private else "address_link_local"
        if address.is_reserved or address == _BROADCAST:
            return "address_reserved"
        if address.is_global:
            return None
        return None if self.allow_private else "address_private"

    def check_address(self, host: str, address: str) -> None:
        """Raises `RefusedTargetError` if `address` (what `host` stands for) is refused."""
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError as exc:
            raise RefusedTargetError("url_invalid", f"{host}: unusable address") from exc
        reason = self.refusal(parsed)
        if reason is not None:
            detail = str(parsed) if host == address else f"{host} resolves to {parsed}"
            raise RefusedTargetError(reason, detail)


def _literal(host: str) -> str | None:
    """The address a host names literally (IPv6 without brackets or zone), else None; refuses the legacy IPv4
    spellings (`127.1`, `2130706433`, `0x7f.0.0.1`) that resolvers map onto an address."""
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
    except OSError:
        return None
    raise RefusedTargetError("url_invalid", f"{host} is not a canonical IPv4 address")


def check_url(url: str, policy: EgressPolicy) -> URL:
    """The URL if its scheme and any literal address pass `policy` (no DNS lookup); raises `RefusedTargetError`."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise RefusedTargetError("url_invalid", "unparsable URL") from exc
    if parsed.scheme not in SCHEMES:
        raise RefusedTargetError("url_scheme", f"scheme {parsed.scheme!r} (http or https only)")
    host = parsed.host
    if not parsed.absolute or not host:
        raise RefusedTargetError("url_invalid", "no host")
    name = host.rstrip(".").lower()
    if not policy.allow_private and (name == "localhost" or name.endswith(".localhost")):
        raise RefusedTargetError("address_loopback", host)
    address = _literal(host)
    if address is not None:
        policy.check_address(host, address)
    return parsed


async def check_endpoint(url: str, policy: EgressPolicy, timeout_s: float = 5.0) -> tuple[str, ...]:
    """The configuration-time check: `check_url`, then every address the host resolves to now (returned).

    Raises `RefusedTargetError` for a refused URL or address, `RejectedError('url_unresolvable')` when the name
    does not resolve. The dispatcher checks again at each delivery: DNS answers may change.
    """
    parsed = check_url(url, policy)
    host = parsed.host
    assert host is not None  # check_url refuses URLs without a host
    literal = _literal(host)
    if literal is not None:
        return (literal,)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(host, parsed.port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise RejectedError("url_unresolvable", f"{host}: {type(exc).__name__}") from exc
    addresses = tuple(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
    for address in addresses:
        policy.check_address(host, address)
    return addresses


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing a name if any address it resolves to is refused by the policy (the
    connection uses these very addresses; aiohttp skips resolvers for literal IPs, which `check_url` covers)."""

    def __init__(self, policy: EgressPolicy, resolver: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._resolver = resolver or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            results = await self._resolver.resolve(host, port, family)
        except OSError as exc:
            raise UnreachableError("dns", f"{host}: {type(exc).__name__}") from exc
        for result in results:
            self._policy.check_address(host, result["host"])
        return results

    async def close(self) -> None:
        await self._resolver.close()


def guarded_session(policy: EgressPolicy, **connector: Any) -> aiohttp.ClientSession:
    """A client session whose connections only reach addresses `policy` allows (`connector`: TCPConnector
    arguments such as `limit`). Environment proxies are ignored (trust_env=False): a proxy would resolve names
    where this guard cannot see."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=GuardedResolver(policy), **connector), trust_env=False
    )
