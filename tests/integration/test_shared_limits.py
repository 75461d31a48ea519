"""Limits counted on Redis (app.core.resilience.shared_limits), against a real redis-server:
two replicas (each its own SharedState, one Redis) together stay under one rpm, tpm and
daily quota; a key at its quota waits for the day's end (BUDGET_TIMEZONE); caller limits are
shared; a replica cut off from Redis allows only its share, and a Redis back empty gets
today's counts back."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from app.core.auth import CallerAuthenticator
from app.core.clock import ManualClock
from app.core.errors import RateLimitExceeded
from app.core.resilience.ratelimit import Unlimited
from app.core.resilience.shared_limits import SharedLimiter, SharedLimits
from app.core.settings import Settings
from app.core.shared import SharedState, SharedStateDown
from tests.support.redis import RedisServer, needs_redis

pytestmark = needs_redis


class Pair:
    """Two replicas' handles on one Redis, under a prefix of their own."""

    def __init__(self, url: str) -> None:
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        self.a = SharedState(url, prefix=prefix, replica_id="a")
        self.b = SharedState(url, prefix=prefix, replica_id="b")

    async def beat(self) -> None:
        for _ in range(2):  # the second round sees both
            await asyncio.gather(self.a.beat(), self.b.beat())

    async def aclose(self) -> None:
        await asyncio.gather(self.a.aclose(), self.b.aclose())


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[Pair]:
    replicas = Pair(redis_server.url)
    await replicas.beat()
    yield replicas
    await replicas.aclose()


def _limiters(
    pair: Pair, clock: ManualClock, **limits: int | None
) -> tuple[SharedLimiter, SharedLimiter]:
    name = ("ai", "groq", uuid.uuid4().hex[:8])
    made = [SharedLimits(s, clock).limiter(name, **limits) for s in (pair.a, pair.b)]
    assert isinstance(made[0], SharedLimiter)
    assert isinstance(made[1], SharedLimiter)
    return made[0], made[1]


async def _eventually_get(state: SharedState, key: str, want: bytes) -> bytes | None:
    """GET `key` until it reads `want` (or 1 s passed); a stale connection is dropped by
    its first failure."""
    value = None
    for _ in range(100):
        with contextlib.suppress(SharedStateDown):
            value = await state.call("GET", key)
            if value == want:
                break
        await asyncio.sleep(0.01)
    return value


# -- one rpm and tpm for every replica ----------------------------------------------------


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rpm=st.integers(min_value=1, max_value=40),
    tpm=st.none() | st.integers(min_value=50, max_value=2000),
    calls=st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=80),
)
async def test_two_replicas_together_never_pass_one_rpm_or_tpm(
    redis_server: RedisServer, rpm: int, tpm: int | None, calls: list[int]
) -> None:
    """Concurrent acquisitions from two replicas: the requests granted (and their tokens)
    stay under the one limit, plus what refilled while they ran (rpm/60 per second); and as
    long as a limit is not reached, nothing is refused."""
    replicas = Pair(redis_server.url)
    try:
        await replicas.beat()
        a, b = _limiters(replicas, ManualClock(), rpm=rpm, tpm=tpm)
        started = time.monotonic()
        waits = await asyncio.gather(
            *((a if i % 2 else b).acquire(tokens) for i, tokens in enumerate(calls))
        )
        elapsed = time.monotonic() - started
        granted = [tokens for tokens, wait in zip(calls, waits, strict=True) if wait == 0]
        assert len(granted) <= rpm + elapsed * rpm / 60
        if tpm is not None:
            # A call never takes more than the whole minute's tokens (as the local bucket).
            assert sum(min(t, tpm) for t in granted) <= tpm + elapsed * tpm / 60
        if tpm is None and len(calls) <= rpm:
            assert len(granted) == len(calls)
        assert all(wait >= 0 for wait in waits)
    finally:
        await replicas.aclose()


async def test_a_refused_replica_knows_when_to_ask_again_without_asking(pair: Pair) -> None:
    """At the rpm limit the wait is the refill time (60/rpm s per request), and until then
    the replica refuses from memory: Redis is not called again."""
    clock = ManualClock()
    a, b = _limiters(pair, clock, rpm=6)
    assert [await a.acquire(0) for _ in range(3)] == [0.0] * 3
    assert [await b.acquire(0) for _ in range(3)] == [0.0] * 3
    wait = await a.acquire(0)
    assert wait == pytest.approx(10.0, abs=0.1)  # one request per 60/6 s
    await pair.a.aclose()  # any call to Redis from `a` would now fail
    assert await a.acquire(0) == pytest.approx(10.0, abs=0.1)
    assert pair.a.up  # no call was made to notice
    clock.advance(5)
    assert await a.acquire(0) == pytest.approx(5.0, abs=0.1)


# -- the daily quota -----------------------------------------------------------------------


async def test_the_daily_quota_is_shared_and_resets_with_the_day(pair: Pair) -> None:
    """Three requests a day between two replicas, the day in Europe/Berlin: the fourth is
    refused until local midnight (23:00 UTC in winter), then the count starts again."""
    berlin = ZoneInfo("Europe/Berlin")
    clock = ManualClock(wall=datetime(2026, 1, 10, 22, 30, tzinfo=UTC))  # 23:30 in Berlin
    name = ("ai", "groq", uuid.uuid4().hex[:8])
    a = SharedLimits(pair.a, clock, berlin).limiter(name, rpm=None, rpd=3)
    b = SharedLimits(pair.b, clock, berlin).limiter(name, rpm=None, rpd=3)
    assert isinstance(a, SharedLimiter)
    assert isinstance(b, SharedLimiter)
    assert [await a.acquire(10), await b.acquire(10), await a.acquire(10)] == [0.0] * 3
    assert await b.acquire(10) == pytest.approx(30 * 60)  # half an hour to Berlin midnight
    assert b.quota_usage() == (3.0, 3.0)
    assert await a.acquire(10) == pytest.approx(30 * 60)
    assert await pair.a.client.get(a.day_key("2026-01-10")) == b"3"
    clock.advance(30 * 60)
    assert await b.acquire(10) == 0.0
    assert b.quota_usage() == (1.0, 3.0)
    assert a.quota_usage() == (0.0, 3.0)  # a new day: yesterday's count says nothing


async def test_limits_not_configured_are_unlimited_and_never_call_redis(pair: Pair) -> None:
    limits = SharedLimits(pair.a, ManualClock())
    assert isinstance(limits.limiter(("caller", "x"), rpm=None), Unlimited)


# -- callers ------------------------------------------------------------------------------


async def test_a_callers_rpm_holds_across_two_replicas(pair: Pair) -> None:
    """GATEWAY_CALLER_RPM=4 with two replicas: four requests in all, then 429 on both,
    with the wait until the next request refills (15 s); another caller is not affected."""
    settings = Settings(
        gateway_api_keys={"pipeline": SecretStr("key-pipeline-01"), "ops": SecretStr("key-ops-02")},
        gateway_caller_rpm=4,
    )
    clock = ManualClock()
    first, second = CallerAuthenticator(settings, clock), CallerAuthenticator(settings, clock)
    first.share(pair.a)
    second.share(pair.b)
    bearer = "Bearer key-pipeline-01"
    callers = [await (first if i % 2 else second).authenticate(bearer) for i in range(4)]
    assert {c.id for c in callers} == {"pipeline"}
    for replica in (first, second):
        with pytest.raises(RateLimitExceeded) as refused:
            await replica.authenticate(bearer)
        assert refused.value.retry_after_s == pytest.approx(15.0, abs=0.1)
    assert (await first.authenticate("Bearer key-ops-02")).id == "ops"


# -- Redis away, and back empty -------------------------------------------------------------


async def test_while_redis_is_away_each_replica_allows_only_its_share(
    server: RedisServer,
) -> None:
    """Two replicas seen alive, rpm 10 and 20 requests a day: each used 4 through Redis
    (8 of the day), then Redis stops. Each replica's minute share is 10/2 less what Redis
    granted it in that minute, and its day share is half of what it saw left: together they
    stay under both limits."""
    replicas = Pair(server.url)
    clock = ManualClock()
    try:
        await replicas.beat()
        assert replicas.a.live_replicas == replicas.b.live_replicas == 2
        a, b = _limiters(replicas, clock, rpm=10, rpd=20)
        assert all([await (a if i % 2 == 0 else b).acquire(0) == 0 for i in range(8)])
        assert a.quota_usage() == (7.0, 20.0)  # the last count `a` saw
        assert b.quota_usage() == (8.0, 20.0)
        server.stop()
        # The minute's share is 5 each, of which Redis granted each 4 already.
        assert [await a.acquire(0) == 0 for _ in range(3)] == [True, False, False]
        assert [await b.acquire(0) == 0 for _ in range(3)] == [True, False, False]
        assert not replicas.a.up
        assert not replicas.b.up
        # A minute later the minute's share is whole again (5), and the day's share limits:
        # a saw 7 used, (20 - 7)/2 = 6.5, so 6 in all; b saw 8, (20 - 8)/2 = 6.
        clock.advance(60)
        assert sum([await a.acquire(0) == 0 for _ in range(8)]) == 5
        assert sum([await b.acquire(0) == 0 for _ in range(8)]) == 5
        clock.advance(60)
        assert (await a.acquire(0)) > 3600  # the day's share is spent: until the day ends
        assert (await b.acquire(0)) > 3600
        used_a, used_b = a.quota_usage(), b.quota_usage()
        assert used_a == (13.0, 20.0)  # 7 seen + 6 counted here
        assert used_b == (14.0, 20.0)  # 8 seen + 6: 8 + 6 + 6 = 20 in the fleet
    finally:
        await replicas.aclose()


async def test_a_replica_that_used_more_than_its_share_waits_when_redis_goes(
    server: RedisServer,
) -> None:
    """The other replica was idle, so `a` took 8 of the 10 rpm through Redis: cut off, its
    share (5) is overdrawn by 3 and it sends nothing until its bucket refills past zero."""
    replicas = Pair(server.url)
    clock = ManualClock()
    try:
        await replicas.beat()
        a, _ = _limiters(replicas, clock, rpm=10)
        assert all([await a.acquire(0) == 0 for _ in range(8)])
        server.stop()
        assert await a.acquire(0) == pytest.approx(48.0)  # (3 + 1) requests at 5 a minute
        clock.advance(48)
        assert [await a.acquire(0) == 0 for _ in range(2)] == [True, False]
    finally:
        await replicas.aclose()


async def test_a_share_shrinks_with_a_new_replica_and_keeps_what_was_used(
    server: RedisServer,
) -> None:
    """rpm 12 between two replicas: `a` used 3 of its 6. A third replica arrives, the
    share is 4 and still half used, so cut off from Redis `a` sends 2 more, not 4."""
    replicas = Pair(server.url)
    clock = ManualClock()
    third = SharedState(server.url, prefix=replicas.a.prefix, replica_id="c")
    try:
        await replicas.beat()
        a, _ = _limiters(replicas, clock, rpm=12)
        assert all([await a.acquire(0) == 0 for _ in range(3)])
        await third.beat()
        await replicas.a.beat()
        assert replicas.a.live_replicas == 3
        server.stop()
        assert [await a.acquire(0) == 0 for _ in range(3)] == [True, True, False]
    finally:
        await third.aclose()
        await replicas.aclose()


async def test_a_redis_back_empty_gets_todays_count_back(server: RedisServer) -> None:
    """Redis restarts empty: the replica that saw (and counted) 5 requests today raises the
    shared count to 5 when it is reached again, so the quota is not handed out twice."""
    replicas = Pair(server.url)
    clock = ManualClock()
    try:
        await replicas.beat()
        a, b = _limiters(replicas, clock, rpm=None, rpd=6)
        assert all([await a.acquire(0) == 0 for _ in range(4)])
        server.stop()
        await replicas.a.beat()  # the heartbeat notices: down
        assert not replicas.a.up
        assert await a.acquire(0) == 0  # its share, counted here: 5 in all today
        server.start()  # same port, empty
        await replicas.a.beat()  # back: reconciliation runs once
        day, key = a.today_key()
        assert await _eventually_get(replicas.b, key, b"5") == b"5"
        assert await b.acquire(0) == 0
        assert await a.acquire(0) > 0  # 6 of 6: at the quota
        assert day == "2026-01-01"
    finally:
        await replicas.aclose()


# -- leases: a large limit is not a round trip per request ----------------------------------


async def _scripts_run(state: SharedState) -> int:
    stats = await state.client.info("commandstats")
    return sum(
        int(entry["calls"])
        for name, entry in stats.items()
        if name in ("cmdstat_evalsha", "cmdstat_eval")
    )


async def test_a_large_limit_is_taken_in_leases_and_never_passed(pair: Pair) -> None:
    """rpm 60,000 between two replicas (a lease is at most 1 % of it each): 400 requests
    through `a` cost a small fraction of 400 scripts, and the count on Redis covers every
    request granted (leftovers are counted, never handed out twice)."""
    clock = ManualClock()
    a, b = _limiters(pair, clock, rpm=60_000, rpd=1_000_000)
    before = await _scripts_run(pair.a)
    assert all([await a.acquire(0) == 0 for _ in range(400)])
    scripts = await _scripts_run(pair.a) - before
    assert scripts <= 40, scripts  # 1, 2, 4, ... 256 then 300-sized leases: about 10
    used_a = a.quota_usage()
    assert used_a is not None
    assert used_a[0] >= 400  # Redis counted every request `a` served, and its leftovers
    assert used_a[0] <= 400 + 300  # and no more than one lease (1 % of 60,000 / 2) beyond
    assert await b.acquire(0) == 0.0
    used_b = b.quota_usage()
    assert used_b is not None
    assert used_b[0] >= used_a[0] + 1


async def test_a_lease_expires_unused_and_the_next_one_is_sized_to_what_was_used(
    pair: Pair,
) -> None:
    """A lease is served from for LEASE_S only: after that its leftovers are dropped (already
    counted on Redis) and the next lease asks for what was used, not for twice as much."""
    from app.core.resilience.shared_limits import LEASE_S

    clock = ManualClock()
    a, _ = _limiters(pair, clock, rpm=60_000)
    for _ in range(16):  # leases of 1, 2, 4, 8 and one of 16 begun
        assert await a.acquire(0) == 0.0
    before = await _scripts_run(pair.a)
    clock.advance(LEASE_S + 0.01)
    assert await a.acquire(0) == 0.0  # the old lease expired: one script for a new one
    assert await _scripts_run(pair.a) - before == 1
    assert a._lease_want <= 16  # sized by use, not doubled again


async def test_a_small_limit_is_exact_one_script_per_request(pair: Pair) -> None:
    """A free tier's 30 rpm (below 200 per replica) is never leased: every request is
    decided on Redis, so two replicas take exactly 30 between them."""
    clock = ManualClock()
    a, b = _limiters(pair, clock, rpm=30)
    before = await _scripts_run(pair.a)
    granted = [await (a if i % 2 else b).acquire(0) == 0 for i in range(40)]
    assert sum(granted) == 30
    assert await _scripts_run(pair.a) - before >= 30
