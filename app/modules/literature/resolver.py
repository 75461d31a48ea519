"""GuardedResolver: the point where a host name becomes addresses, and the last check before
a socket is opened.

aiohttp's connector asks it for a host's addresses. It resolves once (or takes the configured
override), refuses the whole host if *any* address is not public (unless the host is
trusted), and returns only the addresses it checked, flagged numeric, so the connection goes
to a checked address and no second lookup can be rebound to another.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from app.modules.literature.safety import (
    EgressPolicy,
    Refusal,
    UnsafeTarget,
    parse_ip_literal,
)


class BlockedAddress(OSError):
    """Raised inside aiohttp's resolver so the connector gives up on the host; an OSError
    because aiohttp wraps exactly those as DNS errors, keeping this one as the cause."""

    def __init__(self, refusal: UnsafeTarget) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class GuardedResolver(AbstractResolver):
    """Resolve once, check every address, return only checked addresses."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        name = host.lower().rstrip(".")
        try:
            self._policy.check_host_name(name)
            override = self._policy.override(name)
            literal = parse_ip_literal(name)
            if override is not None or literal is not None:
                address = override or literal
                assert address is not None
                self._policy.check_address(name, address)
                return [_result(host, address, port)]
            resolved = await self._inner.resolve(host, port, family)
            if not resolved:
                raise UnsafeTarget(Refusal.UNRESOLVABLE, "the host has no address")
            for entry in resolved:
                self._policy.check_address(name, ipaddress.ip_address(entry["host"]))
        except UnsafeTarget as refusal:
            raise BlockedAddress(refusal) from None
        return [
            {**entry, "hostname": host, "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}
            for entry in resolved
        ]

    async def close(self) -> None:
        await self._inner.close()


def _result(
    host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> ResolveResult:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return {
        "hostname": host,
        "host": str(address),
        "port": port,
        "family": family,
        "proto": 0,
        "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
    }
