"""An outage that begins while this replica still has scripts on the wire.

A replica cut off from Redis spends only its outage reserve, as far as it knows it. Two
scripts change that reserve on Redis and can be executed there before their answer is back:
RESERVE (a call that fits only with the replica's own reserve takes from it) and STANDBY (the
reserve resized, smaller when the others spent). If the outage starts in between, the
replica's idea of its reserve is larger than what Redis keeps for it, and the difference is
spent twice: once by this replica from its reserve, once by the others through Redis. CI
caught it as 11 calls paid on a budget of 10 (a pooled connection failed 200 ms after Redis
came back, while other calls of the same replica were in flight).

The link is a `FaultProxy` in front of Redis for replica `a`: answers held back (the script
runs at once, its answer comes late), then a reset for the next command (the outage).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as redis

from app.core.clock import ManualClock
from app.core.settings import ProviderName
from app.modules.ai.budget import Reservation
from tests.chaos.proxy import FaultProxy
from tests.support.budgets import Cluster, Replica, nano
from tests.support.redis import RedisServer, needs_redis
from tests.support.sandbox import fresh_database_url

pytestmark = needs_redis

OA = ProviderName.OPENAI
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
TODAY = ("d", "2026-03-10")
NANO = 10**9
# A's answers come this late: well inside the replicas' 0.5 s timeout, long enough for the
# test to cut the link while one is held back.
HELD_BACK_S = 0.3


@pytest.fixture
async def cluster(server: RedisServer) -> Any:
    cluster = await Cluster.start(
        server.url,
        ManualClock(wall=NOON),
        fresh_database_url(),
        daily_budget_usd_openai=1.0,
        daily_budget_usd_gemini=None,
        daily_budget_usd_azure=None,
        budget_outage_share=0.5,
    )
    yield cluster
    await cluster.aclose()


@pytest.fixture
def proxy(server: RedisServer) -> Any:
    proxy = FaultProxy("127.0.0.1", server.port).start()
    yield proxy
    proxy.stop()


async def _warm(cluster: Cluster, proxy: FaultProxy) -> tuple[Replica, Replica]:
    """`a` (through the proxy) and `b`, each with one paid call of 0.1 behind it and its
    reserve sized: 0.2 for `a` (0.5 x 0.8 / 2) and 0.15 for `b` (0.5 x 0.6 / 2)."""
    a = cluster.replica("a", redis_url=f"redis://127.0.0.1:{proxy.port}/0")
    b = cluster.replica("b")
    for _ in range(2):
        await asyncio.gather(a.shared.beat(), b.shared.beat())
    await asyncio.gather(a.store.sync(), b.store.sync())
    for replica in (a, b):
        call = await replica.store.acquire(OA, "alice", 0.1, lease_s=30)
        assert isinstance(call, Reservation)
        replica.store.settle(call, 0.1)
        await replica.store.flush()
    for replica in (a, b):
        await replica.store.tick()
    today = await cluster.hash(*TODAY)
    reserves = (nano(today, "b:a:openai"), nano(today, "b:b:openai"))
    assert reserves == (2 * NANO // 10, 15 * NANO // 100)
    return a, b


async def _spend(replica: Replica, times: int) -> Decimal:
    """Up to `times` calls of 0.1 (worst case and cost), each settled at once."""
    spent = Decimal(0)
    for _ in range(times):
        call = await replica.store.acquire(OA, "alice", 0.1, lease_s=30)
        if isinstance(call, Reservation):
            replica.store.settle(call, 0.1)
            spent += Decimal("0.1")
    return spent


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    """Until Redis shows what `check` looks for (a script has run there)."""
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("Redis never showed it")


async def _reconcile(cluster: Cluster, *replicas: Replica) -> int:
    """Every replica back on Redis with its settles applied; what Redis counts as spent."""
    for replica in replicas:
        await replica.shared.beat()
        await replica.store.sync()
        await replica.store.flush()
        assert replica.store.synced
    return nano(await cluster.hash(*TODAY), "s:openai")


async def test_a_call_in_flight_that_draws_on_the_reserve_is_not_spent_again_in_the_outage(
    cluster: Cluster, proxy: FaultProxy
) -> None:
    """`b` spends all but `a`'s reserve. `a`'s next call takes 0.1 of its reserve on Redis;
    before its answer is back, another command of `a` fails: the outage starts with `a`
    believing it has 0.2 left. It has 0.1: one more call, not two."""
    a, b = await _warm(cluster, proxy)
    assert await _spend(b, 10) == Decimal("0.6")  # free money and its own reserve
    proxy.set(first_byte_delay_s=HELD_BACK_S)
    in_flight = asyncio.create_task(a.store.acquire(OA, "alice", 0.1, lease_s=30))

    async def drawn() -> bool:
        return nano(await cluster.hash(*TODAY), "b:a:openai") == NANO // 10

    await _until(drawn)  # the script ran; its answer is held back
    proxy.set(first_byte_delay_s=HELD_BACK_S, reset_on_request=True)
    spent_a = await _spend(a, 3)  # the first command is reset: `a` is cut off
    assert not a.store.synced
    first = await in_flight
    assert isinstance(first, Reservation)
    a.store.settle(first, 0.1)
    spent_a += Decimal("0.1")
    proxy.clear()
    assert spent_a == Decimal("0.2")  # the one it drew, and what was left of its reserve
    assert await _reconcile(cluster, a, b) == NANO
    assert await _spend(b, 3) == 0


async def test_a_reserve_resized_on_redis_while_its_answer_is_late_is_not_spent_twice(
    cluster: Cluster, proxy: FaultProxy
) -> None:
    """`b` spends 0.4: `a`'s next refresh finds its reserve too big (0.5 x 0.25 / 2 pays for
    no call). The outage begins before that answer reaches `a`, which still counts on 0.2:
    Redis must keep those 0.2 out of `b`'s reach until `a` has learned the new size."""
    a, b = await _warm(cluster, proxy)
    assert await _spend(b, 4) == Decimal("0.4")
    await b.store.flush()
    lease = cluster.prefix + "budget:lease"
    client = redis.Redis.from_url(cluster.redis_url)
    try:
        before = await client.zscore(lease, "sb:a")
        cluster.clock.advance(1.0)  # so the renewed lease shows the script ran
        proxy.set(first_byte_delay_s=HELD_BACK_S)
        refresh = asyncio.create_task(a.store.tick())

        async def resized() -> bool:
            return bool(await client.zscore(lease, "sb:a") != before)

        await _until(resized)
    finally:
        await client.aclose()
    proxy.set(first_byte_delay_s=HELD_BACK_S, reset_on_request=True)
    spent_a = await _spend(a, 3)
    assert not a.store.synced
    await refresh
    proxy.clear()
    spent_b = await _spend(b, 6)
    assert Decimal("0.6") + spent_a + spent_b <= Decimal("1.0")
    assert await _reconcile(cluster, a, b) <= NANO
