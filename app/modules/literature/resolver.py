"""The network end of the SSRF guard: where a host name becomes addresses, and where an
address becomes a socket.

GuardedResolver: aiohttp's connector asks it for a host's addresses. It resolves once (or
takes the configured override), refuses the whole host if *any* address is not public (unless
the host is trusted), and returns only the addresses it checked, flagged numeric, so the
connection goes to a checked address and no second lookup can be rebound to another.

SocketGuard: aiohttp never asks the resolver about a host it takes for an IP literal; it
connects straight to it. So the connector's `socket_factory` checks every socket address
aiohttp is about to connect to, whatever route it came by, against the host the request was
checked for (`SocketGuard.connecting`). A connection to an address nobody checked cannot
be opened, even if the URL checks upstream were wrong.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult

from app.modules.literature.safety import (
    EgressPolicy,
    Refusal,
    UnsafeTarget,
    read_host,
)

# The checked host the current task is connecting for. A ContextVar holds no state of its own:
# each request's task (and the tasks aiohttp starts from it) sees only the value it set, so
# two apps or two requests never see each other's. Unset, only public addresses pass.
_CONNECTING_FOR: ContextVar[str | None] = ContextVar("literature_connecting_for", default=None)


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
        name = host.lower().removesuffix(".")
        try:
            reading = read_host(name)  # any spelling that reaches us is read in full, too
            for candidate in reading.addresses:
                self._policy.check_address(name, candidate)
            if reading.ambiguous is not None:
                raise UnsafeTarget(Refusal.MALFORMED, reading.ambiguous)
            self._policy.check_host_name(name)
            override = self._policy.override(name)
            literal = reading.address
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


class SocketGuard:
    """aiohttp's `socket_factory`: checks the socket address of every connection attempt.

    It sees the addrinfo aiohappyeyeballs is about to connect, so it covers IP literals (for
    which aiohttp skips the resolver), resolved names, overrides and anything a future
    aiohttp does differently. Trust comes from the host the fetcher checked, set around the
    request with `connecting`; without it only public addresses are connected to."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy

    @contextmanager
    def connecting(self, host: str) -> Iterator[None]:
        """Connections opened inside the block are for `host` (as `check_url` returned it)."""
        token = _CONNECTING_FOR.set(host)
        try:
            yield
        finally:
            _CONNECTING_FOR.reset(token)

    def __call__(self, addr_info: AddrInfoType) -> socket.socket:
        family, kind, proto, _, sockaddr = addr_info
        host = _CONNECTING_FOR.get() or ""
        try:
            try:
                address = ipaddress.ip_address(sockaddr[0])
            except (ValueError, IndexError, TypeError):
                raise UnsafeTarget(Refusal.MALFORMED, "the socket address is not an IP") from None
            self._policy.check_address(host, address)
        except UnsafeTarget as refusal:
            raise BlockedAddress(refusal) from None
        return socket.socket(family=family, type=kind, proto=proto)


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
