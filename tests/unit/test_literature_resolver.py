"""GuardedResolver: resolve once, check every address, hand back only checked addresses. The
inner resolver stands for DNS (the far side); here it answers from a table. SocketGuard: the
last check, on the socket address itself, which also sees the IP literals aiohttp never
hands to a resolver."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult

from app.modules.literature.resolver import BlockedAddress, GuardedResolver, SocketGuard
from app.modules.literature.safety import EgressPolicy, Refusal


class TableDns(AbstractResolver):
    """DNS answering from a dict, counting lookups."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        return [
            {
                "hostname": host,
                "host": a,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for a in self.table.get(host, [])
        ]

    async def close(self) -> None:
        return None


async def test_public_names_resolve_to_their_checked_addresses() -> None:
    dns = TableDns({"pub.example": ["93.184.216.34", "93.184.216.35"]})
    resolved = await GuardedResolver(EgressPolicy(), dns).resolve("pub.example", 443)
    assert [r["host"] for r in resolved] == ["93.184.216.34", "93.184.216.35"]
    assert all(r["flags"] & socket.AI_NUMERICHOST for r in resolved)
    assert dns.lookups == ["pub.example"]


@pytest.mark.parametrize(
    ("addresses", "reason"),
    [
        (["127.0.0.1"], Refusal.LOOPBACK),
        (["10.1.2.3"], Refusal.PRIVATE),
        (["169.254.169.254"], Refusal.METADATA),
        (["93.184.216.34", "192.168.0.10"], Refusal.PRIVATE),  # one bad address is enough
        ([], Refusal.UNRESOLVABLE),
    ],
)
async def test_a_name_resolving_to_a_forbidden_address_is_refused(
    addresses: list[str], reason: Refusal
) -> None:
    resolver = GuardedResolver(EgressPolicy(), TableDns({"rebind.example": addresses}))
    with pytest.raises(BlockedAddress) as blocked:
        await resolver.resolve("rebind.example", 80)
    assert blocked.value.refusal.reason is reason


async def test_overrides_replace_dns_and_only_trusted_names_may_be_private() -> None:
    dns = TableDns({})
    policy = EgressPolicy(
        trusted_hosts=frozenset({"sandbox.test"}),
        host_overrides={"sandbox.test": "127.0.0.1", "evil.test": "127.0.0.1"},
    )
    resolver = GuardedResolver(policy, dns)
    assert [r["host"] for r in await resolver.resolve("sandbox.test", 80)] == ["127.0.0.1"]
    with pytest.raises(BlockedAddress):
        await resolver.resolve("evil.test", 80)
    assert dns.lookups == []  # no DNS at all for overridden names


async def test_numeric_spellings_reaching_the_resolver_are_still_checked() -> None:
    dns = TableDns({})
    resolver = GuardedResolver(EgressPolicy(), dns)
    for host in ("2130706433", "0x7f000001", "127.1"):
        with pytest.raises(BlockedAddress):
            await resolver.resolve(host, 80)
    with pytest.raises(BlockedAddress):
        await resolver.resolve("metadata.google.internal", 80)
    assert dns.lookups == []


async def test_unicode_spellings_reaching_the_resolver_are_read_in_full() -> None:
    dns = TableDns({})
    resolver = GuardedResolver(EgressPolicy(), dns)
    for host in ("\u2460\u2461\u2466.0.0.1", "127\u30020\u30020\u30021", "0x7f.\uff11"):
        with pytest.raises(BlockedAddress) as blocked:
            await resolver.resolve(host, 80)
        assert blocked.value.refusal.reason is Refusal.LOOPBACK, host
    assert dns.lookups == []


def _addrinfo(address: str, port: int = 80) -> AddrInfoType:
    if ":" in address:
        return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", Refusal.LOOPBACK),
        ("10.0.0.7", Refusal.PRIVATE),
        ("169.254.169.254", Refusal.METADATA),
        ("::1", Refusal.LOOPBACK),
        ("::ffff:127.0.0.1", Refusal.LOOPBACK),
        ("fe80::1%1", Refusal.LINK_LOCAL),
    ],
)
def test_the_socket_guard_refuses_forbidden_socket_addresses(address: str, reason: Refusal) -> None:
    guard = SocketGuard(EgressPolicy(trusted_hosts=frozenset({"sandbox.test"})))
    with pytest.raises(BlockedAddress) as blocked:
        guard(_addrinfo(address))  # no host set: only public addresses
    assert blocked.value.refusal.reason is reason
    with guard.connecting("other.test"), pytest.raises(BlockedAddress):
        guard(_addrinfo(address))


def test_the_socket_guard_lets_public_and_trusted_addresses_through() -> None:
    guard = SocketGuard(EgressPolicy(trusted_hosts=frozenset({"sandbox.test"})))
    guard(_addrinfo("93.184.216.34")).close()
    with guard.connecting("sandbox.test"):
        guard(_addrinfo("127.0.0.1")).close()
    with pytest.raises(BlockedAddress):  # the trust ended with the block
        guard(_addrinfo("127.0.0.1"))


class _Accepts:
    """A TCP server on 127.0.0.1 counting the connections it accepts."""

    def __init__(self) -> None:
        self.count = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.count += 1
        await reader.read(65536)
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


async def test_aiohttp_ip_literals_skip_the_resolver_but_not_the_socket_guard() -> None:
    """The report's root cause, at the aiohttp level: a URL whose host is an IP literal goes to
    the socket without any resolver call. With the guard as socket_factory no connection is
    made, even though nothing checked the URL first."""
    accepts = _Accepts()
    server = await asyncio.start_server(accepts.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    dns = TableDns({})
    policy = EgressPolicy(trusted_hosts=frozenset({"127.0.0.1"}))
    guard = SocketGuard(policy)
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy, dns), socket_factory=guard)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(aiohttp.ClientConnectorError) as failed:
                await session.get(f"http://127.0.0.1:{port}/")
            assert isinstance(failed.value.os_error, BlockedAddress)
            assert accepts.count == 0
            assert dns.lookups == []  # aiohttp asked no resolver: only the guard saw it
            with guard.connecting("127.0.0.1"):  # checked and trusted: connected
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    assert response.status == 204
            assert accepts.count == 1
    finally:
        server.close()
        await server.wait_closed()
