"""The Redis budget store against a real redis-server: several replicas (each its own
SharedState, one Redis, one ledger database) reserve atomically across every budget, settle
once, lose a killed replica's holds with their lease, seed a period once, keep monthly caps,
spend only their share while Redis is away, and reconcile once when it is back."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.clock import ManualClock
from app.core.db import migrate
from app.core.settings import ProviderName
from app.modules.ai.budget import DAY, HELD_RETRY_AFTER_S, MONTH, Blocked, Reservation
from app.modules.ai.budget_store import (
    LEASE_MARGIN_S,
    OUTAGE_RESERVE_LEASE_S,
    SharedReservation,
)
from tests.chaos.proxy import FaultProxy
from tests.support.budgets import Cluster, nano, paused
from tests.support.redis import RedisServer, needs_redis
from tests.support.sandbox import fresh_database_url

pytestmark = needs_redis

OA, GE = ProviderName.OPENAI, ProviderName.GEMINI
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
TODAY = ("d", "2026-03-10")
THIS_MONTH = ("m", "2026-03")
NANO = 10**9
# Half of what is left kept in reserve for an outage: round numbers in the tests below.
_OUTAGE: dict[str, Any] = {
    "budget_outage_share": 0.5,
    "daily_budget_usd_gemini": None,
    "daily_budget_usd_azure": None,
}


@pytest.fixture(scope="module")
def ledger_url() -> str:
    url = fresh_database_url()
    asyncio.run(migrate(url))
    return url


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock(wall=NOON)


async def _cluster(url: str, clock: ManualClock, **settings: object) -> Cluster:
    return await Cluster.start(url, clock, fresh_database_url(), **settings)


@pytest.fixture
async def pair(server: RedisServer, clock: ManualClock) -> AsyncIterator[Cluster]:
    cluster = await _cluster(
        server.url,
        clock,
        daily_budget_usd_openai=1.0,
        daily_budget_usd_gemini=None,
        daily_budget_usd_azure=None,
    )
    yield cluster
    await cluster.aclose()


# -- atomic reservation across budgets ---------------------------------------------------


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    openai=st.integers(min_value=0, max_value=400),
    total=st.integers(min_value=0, max_value=600),
    per_caller=st.integers(min_value=0, max_value=300),
    calls=st.lists(
        st.tuples(
            st.sampled_from([OA, GE]),
            st.sampled_from(["alice", "bob"]),
            st.integers(min_value=1, max_value=90),
        ),
        min_size=1,
        max_size=40,
    ),
)
async def test_concurrent_reservations_hold_all_budgets_or_none_and_never_pass_one(
    redis_server: RedisServer,
    ledger_url: str,
    openai: int,
    total: int,
    per_caller: int,
    calls: list[tuple[ProviderName, str, int]],
) -> None:
    """Two replicas reserve at once (amounts and limits in micro-dollars): no budget ever
    holds more than its limit, and Redis holds, for each budget, exactly the sum of the
    reservations granted on it (a refused call held nothing anywhere); settled, the holds
    are gone and the spend is the sum of the real costs."""
    micro = 1e-6
    clock = ManualClock(wall=NOON)
    cluster = await Cluster.start(
        redis_server.url,
        clock,
        ledger_url,
        migrated=True,
        daily_budget_usd_openai=openai * micro,
        daily_budget_usd_gemini=None,
        daily_budget_usd_total=total * micro,
        daily_budget_usd_per_caller=per_caller * micro,
    )
    try:
        a, b = cluster.replica("a"), cluster.replica("b")
        await asyncio.gather(a.store.sync(), b.store.sync())
        stores = [(a if i % 2 else b).store for i in range(len(calls))]
        results = await asyncio.gather(
            *(
                store.acquire(provider, caller, amount * micro, lease_s=30)
                for store, (provider, caller, amount) in zip(stores, calls, strict=True)
            )
        )
        limits = {"openai": openai, "total": total, "caller:alice": per_caller}
        limits["caller:bob"] = per_caller
        granted: dict[str, int] = dict.fromkeys(limits, 0)
        for (provider, caller, amount), result in zip(calls, results, strict=True):
            if isinstance(result, Reservation):
                lines = {"total", f"caller:{caller}"} | ({"openai"} if provider is OA else set())
                assert set(result.budgets) == lines
                for line in lines:
                    granted[line] += amount
            else:
                assert isinstance(result, Blocked)
        held = await cluster.hash(*TODAY)
        for line, limit in limits.items():
            assert granted[line] <= limit
            # Held: the calls granted, and each replica's outage reserve (never past the
            # limit together: a reserve only grows into money nobody holds).
            reserves = _reserves(held, line)
            assert nano(held, f"r:{line}") == granted[line] * 1000 + reserves
            assert granted[line] * 1000 + reserves <= limit * 1000
        costs = random.Random(len(calls))
        spent: dict[str, int] = dict.fromkeys(limits, 0)
        for store, result in zip(stores, results, strict=True):
            if isinstance(result, Reservation):
                cost = costs.randint(0, int(result.amount * 10**6))
                store.settle(result, cost * micro)
                for line in result.budgets:
                    spent[line] += cost
        await asyncio.gather(a.store.flush(), b.store.flush())
        after = await cluster.hash(*TODAY)
        for line in limits:
            assert nano(after, f"r:{line}") == _reserves(after, line)
            assert nano(after, f"s:{line}") == spent[line] * 1000
    finally:
        await cluster.aclose()


def _reserves(period: dict[str, str], line: str) -> int:
    """The replicas' outage reserves on `line` in a period hash, in billionths."""
    return sum(
        int(value)
        for name, value in period.items()
        if name.startswith("b:") and name.endswith(":" + line)
    )


async def test_a_truly_spent_budget_waits_for_the_reset_and_a_held_one_briefly(
    pair: Cluster, clock: ManualClock
) -> None:
    a, b = pair.replica("a"), pair.replica("b")
    await asyncio.gather(a.store.sync(), b.store.sync())
    first = await a.store.acquire(OA, "alice", 0.6, lease_s=30)
    assert isinstance(first, Reservation)
    held = await b.store.acquire(OA, "bob", 0.6, lease_s=30)
    assert held == Blocked("openai", HELD_RETRY_AFTER_S, held=True, period=DAY)
    a.store.settle(first, 0.5)
    await a.store.flush()
    spent = await b.store.acquire(OA, "bob", 0.6, lease_s=30)
    assert spent == Blocked("openai", 12 * 3600, period=DAY)  # noon: midnight in 12 h
    assert isinstance(await b.store.acquire(OA, "bob", 0.5, lease_s=30), Reservation)


# -- settle once -------------------------------------------------------------------------


async def test_a_settle_whose_answer_was_lost_counts_once(
    server: RedisServer, pair: Cluster
) -> None:
    """Settling twice books once; a settle that Redis executed after the replica gave up
    on its answer (paused mid-send) is sent again at reconciliation and still counts once."""
    a = pair.replica("a")
    await a.store.sync()
    first = await a.store.acquire(OA, "alice", 0.4, lease_s=30)
    assert isinstance(first, Reservation)
    a.store.settle(first, 0.1)
    a.store.settle(first, 0.1)
    await a.store.flush()
    second = await a.store.acquire(OA, "alice", 0.4, lease_s=30)
    assert isinstance(second, Reservation)
    a.store.settle(second, 0.2)
    with paused(server):
        await a.store.flush()  # sent, then the answer timed out: unknown whether it counted
        assert not a.store.synced
    await asyncio.sleep(0.2)
    assert nano(await pair.hash(*TODAY), "s:openai") == int(0.3 * NANO)  # it did count
    await a.shared.beat()  # Redis answers again: on_up reconciles, resending the settle
    for _ in range(100):
        if a.store.synced:
            break
        await asyncio.sleep(0.01)
    assert a.store.synced
    await a.store.sync()  # and once more: nothing changes
    today = await pair.hash(*TODAY)
    assert nano(today, "s:openai") == int(0.3 * NANO)
    assert nano(today, "r:openai") == 0


# -- leases ------------------------------------------------------------------------------


async def test_a_killed_replicas_holds_end_with_their_lease(
    pair: Cluster, clock: ManualClock
) -> None:
    a, b = pair.replica("a"), pair.replica("b")
    await asyncio.gather(a.store.sync(), b.store.sync())
    gone = await a.store.acquire(OA, "alice", 0.7, lease_s=2.0)
    assert isinstance(gone, Reservation)
    # `a` is killed here: its settle never comes.
    assert isinstance(await b.store.acquire(OA, "bob", 0.7, lease_s=2.0), Blocked)
    clock.advance(2.0 + LEASE_MARGIN_S - 0.1)
    assert isinstance(await b.store.acquire(OA, "bob", 0.7, lease_s=2.0), Blocked)
    clock.advance(0.2)
    recovered = await b.store.acquire(OA, "bob", 0.7, lease_s=2.0)
    assert isinstance(recovered, Reservation)
    assert nano(await pair.hash(*TODAY), "r:openai") == int(0.7 * NANO)
    lines = {line["budget"]: line for line in await b.store.lines(caller=None)}
    assert lines["openai"]["reserved_usd"] == pytest.approx(0.7)


# -- seeding -----------------------------------------------------------------------------


async def test_two_replicas_racing_seed_today_once_from_the_ledger(
    server: RedisServer, clock: ManualClock
) -> None:
    cluster = await _cluster(server.url, clock, daily_budget_usd_total=10.0)
    try:
        await cluster.write_ledger(
            ("openai", "alice", 0.3, NOON - timedelta(hours=1)),
            ("gemini", "bob", 0.2, NOON - timedelta(hours=2)),
            ("openai", "alice", 5.0, NOON - timedelta(days=1)),  # yesterday
        )
        replicas = [cluster.replica(name) for name in "abcd"]
        await asyncio.gather(*(r.store.sync() for r in replicas))
        today = await cluster.hash(*TODAY)
        assert nano(today, "s:openai") == int(0.3 * NANO)
        assert nano(today, "s:gemini") == int(0.2 * NANO)
        assert nano(today, "s:total") == int(0.5 * NANO)
        assert nano(today, "s:caller:alice") == int(0.3 * NANO)
        lines = {line["budget"]: line for line in await replicas[3].store.lines(caller=None)}
        assert lines["total"]["spent_usd"] == pytest.approx(0.5)
    finally:
        await cluster.aclose()


async def test_a_redis_back_empty_is_rebuilt_from_the_ledger_and_the_journal_once(
    server: RedisServer, pair: Cluster, clock: ManualClock
) -> None:
    """The documented rule: a seed holds the ledger rows written before its cut (the
    seeding time minus the lag); a replica's settles from before the cut are not sent again
    (the ledger has them), those from after are. No cost is counted twice or lost, and a
    call still in flight is held again."""
    a, b = pair.replica("a"), pair.replica("b")
    await asyncio.gather(a.store.sync(), b.store.sync())
    old = await a.store.acquire(OA, "alice", 0.2, lease_s=30)
    assert isinstance(old, Reservation)
    a.store.settle(old, 0.1)
    await a.store.flush()
    await pair.write_ledger(("openai", "alice", 0.1, clock.now()))  # its row, written
    clock.advance(60)  # older than the lag now
    recent = await a.store.acquire(OA, "alice", 0.3, lease_s=30)
    assert isinstance(recent, Reservation)
    a.store.settle(recent, 0.2)
    await a.store.flush()
    await pair.write_ledger(("openai", "alice", 0.2, clock.now()))  # written too, but late
    in_flight = await b.store.acquire(OA, "bob", 0.25, lease_s=30)
    assert isinstance(in_flight, Reservation)
    assert nano(await pair.hash(*TODAY), "s:openai") == int(0.3 * NANO)

    server.stop()
    server.start()  # empty
    await asyncio.gather(a.shared.beat(), b.shared.beat())
    await asyncio.gather(a.store.sync(), b.store.sync())
    today = await pair.hash(*TODAY)
    assert nano(today, "s:openai") == int(0.3 * NANO)  # 0.1 from the ledger, 0.2 resent
    assert nano(today, "r:openai") == int(0.25 * NANO)  # b's call in flight, held again
    b.store.settle(in_flight, 0.05)
    await b.store.flush()
    today = await pair.hash(*TODAY)
    assert (nano(today, "s:openai"), nano(today, "r:openai")) == (int(0.35 * NANO), 0)


# -- monthly caps ------------------------------------------------------------------------


async def test_a_monthly_cap_blocks_until_the_month_resets_and_alerts_once(
    server: RedisServer, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="app.ai.budget")
    cluster = await _cluster(
        server.url, clock, daily_budget_usd_openai=100.0, monthly_budget_usd_openai=1.0
    )
    try:
        await cluster.write_ledger(("openai", "alice", 0.7, NOON - timedelta(days=8)))
        a, b = cluster.replica("a"), cluster.replica("b")
        await asyncio.gather(a.store.sync(), b.store.sync())
        assert nano(await cluster.hash(*THIS_MONTH), "s:openai") == int(0.7 * NANO)
        assert nano(await cluster.hash(*TODAY), "s:openai") == 0
        blocked = await a.store.acquire(OA, "alice", 0.4, lease_s=30)
        until_april = (datetime(2026, 4, 1, tzinfo=UTC) - NOON).total_seconds()
        assert blocked == Blocked("openai", until_april, period=MONTH)
        first = await a.store.acquire(OA, "alice", 0.15, lease_s=30)
        second = await b.store.acquire(OA, "bob", 0.15, lease_s=30)
        assert isinstance(first, SharedReservation)
        assert isinstance(second, SharedReservation)
        assert first.month_budgets == ("openai",)
        a.store.settle(first, 0.15)  # 85 %
        b.store.settle(second, 0.15)  # 100 %
        await asyncio.gather(a.store.flush(), b.store.flush())
        alerts = [r.getMessage() for r in caplog.records if "budget alert" in r.getMessage()]
        assert sorted(a.split("level=")[1].split("%")[0] for a in alerts) == ["100", "80", "90"]
        assert all("period=month" in a for a in alerts)
        lines = {(x["budget"], x["period"]): x for x in await a.store.lines(caller=None)}
        assert lines[("openai", "month")]["spent_usd"] == pytest.approx(1.0)
        assert lines[("openai", "day")]["spent_usd"] == pytest.approx(0.3)
    finally:
        await cluster.aclose()


# -- Redis away: the local share, then reconciliation -------------------------------------


async def _warm(cluster: Cluster, *names: str, proxied: FaultProxy | None = None) -> list[Any]:
    """Replicas that see each other and Redis, each with one paid call behind it (0.1 held,
    0.1 spent: the size an outage reserve must cover) and its reserve sized. With
    `proxied`, the first reaches Redis through that proxy (to be cut off alone)."""
    replicas = [
        cluster.replica(
            name, redis_url=f"redis://127.0.0.1:{proxied.port}/0" if proxied and i == 0 else None
        )
        for i, name in enumerate(names)
    ]
    for _ in range(2):
        await asyncio.gather(*(r.shared.beat() for r in replicas))
    assert all(r.shared.live_replicas == len(names) for r in replicas)
    await asyncio.gather(*(r.store.sync() for r in replicas))
    for replica in replicas:
        call = await replica.store.acquire(OA, "alice", 0.1, lease_s=30)
        assert isinstance(call, Reservation)
        replica.store.settle(call, 0.1)
        await replica.store.flush()
    for replica in replicas:
        await replica.store.tick()
    return replicas


async def _spend(replica: Any, times: int, worst: float = 0.1, cost: float = 0.1) -> Decimal:
    """Up to `times` calls on `replica` (each settled at once); what they cost."""
    spent = Decimal(0)
    for _ in range(times):
        result = await replica.store.acquire(OA, "alice", worst, lease_s=30)
        if isinstance(result, Reservation):
            replica.store.settle(result, cost)
            spent += Decimal(str(cost))
        else:
            assert result.held
            assert result.retry_after_s == HELD_RETRY_AFTER_S
    return spent


async def test_each_replica_keeps_an_outage_reserve_that_only_it_can_spend(
    server: RedisServer, clock: ManualClock
) -> None:
    """BUDGET_OUTAGE_SHARE=0.5 of what is left, split between the two replicas: after 0.2
    of 1.0 is spent, `a` holds 0.5 x 0.8 / 2 = 0.2 on Redis and `b` 0.5 x 0.6 / 2 = 0.15
    (a reserve only grows into money nobody holds). Each reserve is in `r:` like a call in
    flight, and its owner spends it through Redis when nothing else is left: the budget is
    still spent to its last cent, never past it."""
    cluster = await _cluster(server.url, clock, daily_budget_usd_openai=1.0, **_OUTAGE)
    try:
        a, b = await _warm(cluster, "a", "b")
        today = await cluster.hash(*TODAY)
        assert nano(today, "b:a:openai") == int(0.2 * NANO)
        assert nano(today, "b:b:openai") == int(0.15 * NANO)
        assert nano(today, "r:openai") == int(0.35 * NANO)
        # `b` spends what nobody holds (0.45) and its own reserve (0.15); `a`'s is not its.
        assert await _spend(b, 10) == Decimal("0.6")
        # `a` spends its own reserve through Redis: 1.0 in all.
        assert await _spend(a, 10) == Decimal("0.2")
        await asyncio.gather(a.store.flush(), b.store.flush())
        today = await cluster.hash(*TODAY)
        assert nano(today, "s:openai") == NANO
        assert nano(today, "r:openai") == 0
    finally:
        await cluster.aclose()


async def test_a_replica_cut_off_while_the_other_sees_redis_never_passes_the_budget(
    server: RedisServer, clock: ManualClock
) -> None:
    """The overspend a stale share allowed: `a` loses Redis (its connection is gone) while
    `b` still spends on it. `a` spends only its reserve (0.2), which `b` cannot take; `b`
    spends everything else: 1.0 in all. A share of what `a` last saw left (0.8 / 2 = 0.4)
    would have paid 1.2."""
    cluster = await _cluster(server.url, clock, daily_budget_usd_openai=1.0, **_OUTAGE)
    proxy = FaultProxy("127.0.0.1", server.port).start()
    try:
        a, b = await _warm(cluster, "a", "b", proxied=proxy)
        proxy.set(blackhole=True)  # `a`'s commands reach nothing from now on; `b`'s do
        clock.advance(5.0)  # long past any "just lost" pause
        spent_a = await _spend(a, 10)
        assert not a.store.synced
        assert spent_a == Decimal("0.2")
        spent_b = await _spend(b, 20)
        await b.store.flush()
        assert b.store.synced
        on_redis = Decimal(nano(await cluster.hash(*TODAY), "s:openai")) / NANO
        assert on_redis == Decimal("0.2") + spent_b  # the warm-up calls and `b`'s
        assert on_redis + spent_a == Decimal("1.0")
    finally:
        proxy.stop()
        await cluster.aclose()


async def test_while_redis_is_away_each_replica_spends_only_its_reserve_then_reconciles_once(
    server: RedisServer, clock: ManualClock
) -> None:
    """Redis paused for both: each replica spends its reserve (0.2 and 0.15: two calls and
    one) and no more; when Redis answers again the outage's settles are counted once."""
    cluster = await _cluster(server.url, clock, daily_budget_usd_openai=1.0, **_OUTAGE)
    try:
        a, b = await _warm(cluster, "a", "b")
        with paused(server):
            await asyncio.gather(a.store.lines(caller=None), b.store.lines(caller=None))
            assert not a.store.synced
            assert not b.store.synced
            assert await _spend(a, 6) == Decimal("0.2")
            assert await _spend(b, 6) == Decimal("0.1")
        await asyncio.gather(a.shared.beat(), b.shared.beat())
        await asyncio.gather(a.store.sync(), b.store.sync())
        assert a.store.synced
        assert b.store.synced
        await asyncio.gather(a.store.sync(), b.store.sync())  # reconciled once, not per return
        today = await cluster.hash(*TODAY)
        assert nano(today, "s:openai") == int(0.5 * NANO)  # 0.2 warm-up + 0.2 + 0.1
        assert nano(today, "r:openai") == _reserves(today, "openai")
    finally:
        await cluster.aclose()


async def test_a_killed_replicas_outage_reserve_ends_with_its_lease(
    server: RedisServer, clock: ManualClock
) -> None:
    """`a` dies holding its reserve: after OUTAGE_RESERVE_LEASE_S the scripts release it and
    `b` may spend that money too."""
    cluster = await _cluster(server.url, clock, daily_budget_usd_openai=1.0, **_OUTAGE)
    try:
        a, b = await _warm(cluster, "a", "b")
        await a.store.aclose()  # `a` is gone (no refresher runs): nothing renews its reserve
        assert await _spend(b, 20) == Decimal("0.6")  # everything but a's 0.2
        await b.store.flush()  # b's settles on Redis (its sender would do it)
        clock.advance(OUTAGE_RESERVE_LEASE_S + 1)
        assert await _spend(b, 20) == Decimal("0.2")
        await b.store.flush()
        assert nano(await cluster.hash(*TODAY), "s:openai") == NANO
    finally:
        await cluster.aclose()


async def test_a_call_reserved_on_redis_and_settled_while_it_is_away_is_booked_once(
    server: RedisServer, pair: Cluster
) -> None:
    a = pair.replica("a")
    await a.store.sync()
    flying = await a.store.acquire(OA, "alice", 0.5, lease_s=30)
    assert isinstance(flying, Reservation)
    with paused(server):
        a.store.settle(flying, 0.3)
        await a.store.flush()
        blocked = await a.store.acquire(OA, "alice", 0.8, lease_s=30)  # 0.7 seen left minus 0.3
        assert isinstance(blocked, Blocked)
        assert not blocked.held
    await a.shared.beat()
    await a.store.sync()
    today = await pair.hash(*TODAY)
    assert (nano(today, "s:openai"), nano(today, "r:openai")) == (int(0.3 * NANO), 0)


async def test_a_reservation_whose_answer_was_lost_holds_nothing_once_redis_is_back(
    server: RedisServer, pair: Cluster
) -> None:
    """Redis paused mid-reserve: the script runs when it resumes, after the replica gave up
    on the answer (and refused the call: the loss is not confirmed yet). Reconciliation
    releases that orphan hold instead of leaving it until its lease ends."""
    a = pair.replica("a")
    await a.store.sync()
    warm = await a.store.acquire(OA, "alice", 0.1, lease_s=30)  # the script is loaded
    assert isinstance(warm, Reservation)
    a.store.settle(warm, 0)
    await a.store.flush()
    with paused(server):
        refused = await a.store.acquire(OA, "alice", 0.4, lease_s=30)
        assert refused == Blocked("openai", HELD_RETRY_AFTER_S, held=True, period=DAY)
    await asyncio.sleep(0.2)
    assert nano(await pair.hash(*TODAY), "r:openai") == int(0.4 * NANO)  # it did run
    await a.shared.beat()
    await a.store.sync()
    today = await pair.hash(*TODAY)
    assert (nano(today, "r:openai"), nano(today, "s:openai")) == (0, 0)
    assert isinstance(await a.store.acquire(OA, "alice", 1.0, lease_s=30), Reservation)
