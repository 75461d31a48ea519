"""GuardedResolver: resolve once, check every address, hand back only checked addresses. The
inner resolver stands for DNS (the far side); here it answers from a table."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from app.modules.literature.resolver import BlockedAddress, GuardedResolver
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
