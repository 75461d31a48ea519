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

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.clock import ManualClock
from app.core.db import migrate
from app.core.settings import ProviderName
from app.modules.ai.budget import DAY, HELD_RETRY_AFTER_S, MONTH, Blocked, Reservation
from app.modules.ai.budget_store import LEASE_MARGIN_S, SharedReservation
from tests.support.budgets import Cluster, nano, paused
from tests.support.redis import RedisServer, needs_redis
from tests.support.sandbox import fresh_database_url

pytestmark = needs_redis

OA, GE = ProviderName.OPENAI, ProviderName.GEMINI
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
TODAY = ("d", "2026-03-10")
THIS_MONTH = ("m", "2026-03")
NANO = 10**9


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
            assert nano(held, f"r:{line}") == granted[line] * 1000
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
            assert nano(after, f"r:{line}") == 0
            assert nano(after, f"s:{line}") == spent[line] * 1000
    finally:
        await cluster.aclose()


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


async def test_while_redis_is_away_each_replica_spends_at_most_its_share(
    server: RedisServer, pair: Cluster, clock: ManualClock
) -> None:
    a, b = pair.replica("a"), pair.replica("b")
    await asyncio.gather(a.shared.beat(), b.shared.beat())
    await asyncio.gather(a.shared.beat(), b.shared.beat())
    assert a.shared.live_replicas == b.shared.live_replicas == 2
    await asyncio.gather(a.store.sync(), b.store.sync())
    spent = await a.store.acquire(OA, "alice", 0.3, lease_s=30)
    assert isinstance(spent, Reservation)
    a.store.settle(spent, 0.2)
    await a.store.flush()
    await asyncio.gather(a.store.lines(caller=None), b.store.lines(caller=None))  # last seen
    with paused(server):
        await asyncio.gather(a.store.lines(caller=None), b.store.lines(caller=None))
        assert not a.store.synced
        assert not b.store.synced
        # Just lost (a blip, or a loop too busy to read the answer?): no share yet.
        unconfirmed = await a.store.acquire(OA, "alice", 0.15, lease_s=30)
        assert unconfirmed == Blocked("openai", HELD_RETRY_AFTER_S, held=True, period=DAY)
        clock.advance(2.0)  # two heartbeats: confirmed
        # 0.8 left when they last saw it: 0.4 each.
        granted = {"a": Decimal(0), "b": Decimal(0)}
        for name, replica in (("a", a), ("b", b)):
            for _ in range(6):
                result = await replica.store.acquire(OA, "alice", 0.15, lease_s=30)
                if isinstance(result, Reservation):
                    granted[name] += result.amount
                    replica.store.settle(result, 0.1)
                else:
                    assert result.held
                    assert result.retry_after_s == HELD_RETRY_AFTER_S
            assert not replica.store.synced
        # A share of 0.4 each; a call holds 0.15 and costs 0.1: the fourth would need 0.45.
        assert granted == {"a": Decimal("0.45"), "b": Decimal("0.45")}
    await asyncio.gather(a.shared.beat(), b.shared.beat())
    await asyncio.gather(a.store.sync(), b.store.sync())
    assert a.store.synced
    assert b.store.synced
    await asyncio.gather(a.store.sync(), b.store.sync())  # reconciled once, not per return
    today = await pair.hash(*TODAY)
    assert nano(today, "s:openai") == int(0.8 * NANO)  # 0.2 + 3 x 0.1 + 3 x 0.1
    assert nano(today, "r:openai") == 0


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
