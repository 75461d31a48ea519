"""SharedBreakers against a real redis-server, two or three "replicas" in one process (each
its own SharedState, replica id and breaker): what the two-process tests cannot reach
quickly or at all: a trial lease left by a replica that died, a replica started after the
trip, a message lost, a trip made while Redis was away, and hostile pub/sub messages.

Redis keeps real time (leases expire on its clock), so these use the system clock and
periods of a few hundred milliseconds."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.clock import SystemClock
from app.core.resilience.breaker import AsyncCircuitBreaker, BreakerState, Ticket
from app.core.resilience.shared_breaker import SharedBreakers
from app.core.shared import SharedState
from tests.support.redis import RedisServer, needs_redis

pytestmark = needs_redis

RESET_S = 0.4
# Longer than any "call" these tests hold a trial for (a real trial is bounded by the call's
# own timeout, which the lease outlives).
TRIAL_TTL_S = 1.5


class Replica:
    """One replica's share of the fleet: its Redis handle, breaker and fleet view."""

    def __init__(self, url: str, prefix: str, name: str, *, watch: bool = True) -> None:
        self.shared = SharedState(url, prefix=prefix, replica_id=name, heartbeat_s=0.2)
        # (state entered, origin) of every transition, as the metrics hook receives them.
        self.changes: list[tuple[str, str]] = []
        self.breaker = AsyncCircuitBreaker(
            "groq",
            SystemClock(),
            fail_max=2,
            reset_timeout_s=RESET_S,
            on_change=lambda _, __, new, origin: self.changes.append((new.name.lower(), origin)),
        )
        self.fleet = SharedBreakers(self.shared, SystemClock(), poll_s=0.1, reserve_s=0.5)
        self.fleet.attach(self.breaker, trial_ttl_s=TRIAL_TTL_S)
        self._watch = watch

    async def start(self) -> Replica:
        await self.shared.start()
        if self._watch:
            await self.fleet.start()
        return self

    async def aclose(self) -> None:
        await self.fleet.aclose()
        await self.shared.aclose()

    def trip(self) -> None:
        for _ in range(2):
            ticket = self.breaker.admit()
            assert ticket is not None
            self.breaker.failure(ticket)
        assert self.breaker.state is BreakerState.OPEN


@pytest.fixture
async def fleet(redis: RedisServer) -> AsyncIterator[Callable[..., Awaitable[Replica]]]:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    made: list[Replica] = []

    async def replica(name: str, **kwargs: bool) -> Replica:
        made.append(await Replica(redis.url, prefix, name, **kwargs).start())
        return made[-1]

    yield replica
    for one in made:
        await one.aclose()


async def _until(check: Callable[[], bool], within_s: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within_s, "condition not met in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def _take_trial(replica: Replica, within_s: float = 2.0) -> Ticket:
    """Ask for the trial like a stream of calls would, until it is granted."""
    started = time.monotonic()
    while (ticket := replica.breaker.admit()) is None:
        assert time.monotonic() - started < within_s, "no trial granted"
        await asyncio.sleep(0.01)
    return ticket


async def test_a_trip_reaches_the_other_replicas_in_milliseconds(
    fleet: Callable[..., Awaitable[Replica]],
) -> None:
    a, b = await fleet("a"), await fleet("b")
    a.trip()
    elapsed = await _until(lambda: b.breaker.state is BreakerState.OPEN, 1.0)
    assert elapsed < 0.5
    assert b.breaker.admit() is None
    assert 0 < b.breaker.open_remaining_s() <= RESET_S
    # One trip, decided by `a`: a count of origin=local summed over replicas says 1, not 2.
    assert (a.changes, b.changes) == ([("open", "local")], [("open", "fleet")])


async def test_exactly_one_trial_across_replicas_and_its_verdict_is_everyones(
    fleet: Callable[..., Awaitable[Replica]],
) -> None:
    a, b, c = await fleet("a"), await fleet("b"), await fleet("c")
    a.trip()
    await _until(lambda: c.breaker.state is BreakerState.OPEN, 1.0)
    await asyncio.sleep(RESET_S)
    granted: list[tuple[str, Ticket]] = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # all three ask, again and again, for a second
        for replica in (a, b, c):
            ticket = replica.breaker.admit()
            if ticket is not None:
                granted.append((replica.shared.replica_id, ticket))
        await asyncio.sleep(0.005)
    assert len(granted) == 1
    holder = {"a": a, "b": b, "c": c}[granted[0][0]]
    holder.breaker.success(granted[0][1])
    for replica in (a, b, c):
        breaker = replica.breaker
        await _until(lambda b=breaker: b.state is BreakerState.CLOSED, 1.0)


async def test_a_failed_trial_reopens_everyone_for_a_new_period(
    fleet: Callable[..., Awaitable[Replica]],
) -> None:
    a, b = await fleet("a"), await fleet("b")
    a.trip()
    await asyncio.sleep(RESET_S)
    ticket = await _take_trial(b)
    b.breaker.failure(ticket)
    await _until(lambda: a.breaker.open_remaining_s() > RESET_S / 2, 1.0)
    assert a.breaker.state is BreakerState.OPEN


async def test_the_lease_of_a_replica_that_died_expires_and_another_takes_the_trial(
    fleet: Callable[..., Awaitable[Replica]],
) -> None:
    a, b = await fleet("a"), await fleet("b")
    a.trip()
    await asyncio.sleep(RESET_S)
    await _take_trial(a)  # the trial is out on A, its lease extended to TRIAL_TTL_S
    await asyncio.sleep(0.1)
    await a.fleet.aclose()  # A dies mid-trial: no verdict, no release
    await a.shared._client.aclose()
    died = time.monotonic()
    await _take_trial(b, within_s=TRIAL_TTL_S + 1.0)
    assert time.monotonic() - died >= TRIAL_TTL_S - 0.25  # not before A's lease ran out


async def test_a_replica_started_after_the_trip_is_open_before_its_first_call(
    fleet: Callable[..., Awaitable[Replica]],
) -> None:
    a = await fleet("a")
    a.trip()
    await asyncio.sleep(0.05)
    late = await fleet("late")  # started now: no message will tell it
    assert late.breaker.state is BreakerState.OPEN
    assert late.breaker.admit() is None


async def test_a_lost_message_is_made_up_by_the_poll(
    fleet: Callable[..., Awaitable[Replica]],
) -> None:
    a = await fleet("a")
    deaf = await fleet("deaf", watch=False)  # never subscribed: it only polls
    a.trip()
    await asyncio.sleep(0.05)
    assert deaf.breaker.state is BreakerState.CLOSED
    await deaf.fleet.poll()
    assert deaf.breaker.state is BreakerState.OPEN


async def test_without_redis_each_breaker_decides_alone_and_says_so_when_redis_is_back(
    fleet: Callable[..., Awaitable[Replica]], redis: RedisServer
) -> None:
    a, b = await fleet("a"), await fleet("b")
    redis.stop()
    await _until(lambda: not a.shared.up and not b.shared.up, 2.0)
    a.trip()
    await asyncio.sleep(0.3)
    assert b.breaker.state is BreakerState.CLOSED  # nobody told it
    await asyncio.sleep(RESET_S)
    ticket = a.breaker.admit()  # the local half-open trial, no lease to ask for
    assert ticket is not None
    a.breaker.failure(ticket)  # open again, for a new period
    redis.start()  # back, empty: A writes what happened while Redis was away
    await _until(lambda: b.breaker.state is BreakerState.OPEN, 3.0)


@pytest.fixture
async def idle_shared(redis: RedisServer) -> AsyncIterator[SharedState]:
    shared = SharedState(redis.url, prefix="hostile:", replica_id="me")
    yield shared
    await shared.aclose()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(
        st.binary(max_size=64),
        st.text(max_size=64),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats()
            | st.sampled_from(["groq", "open", "closed", "half_open", "me"]),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.sampled_from(["p", "s", "r", "g", "by", "l"]), inner)
            ),
            max_leaves=12,
        ).map(json.dumps),
    )
)
async def test_a_hostile_message_never_raises_nor_holds_a_breaker_past_its_bounds(
    idle_shared: SharedState, data: bytes | str
) -> None:
    """Anyone who can PUBLISH on the channel can send anything: a message is ignored unless
    it is well formed and about a known breaker, and even then cannot hold the trial lease
    longer than a trial may take, nor open a breaker longer than its reset timeout."""
    breaker = AsyncCircuitBreaker("groq", SystemClock(), fail_max=2, reset_timeout_s=RESET_S)
    fleet = SharedBreakers(idle_shared, SystemClock())
    fleet.attach(breaker, trial_ttl_s=TRIAL_TTL_S)
    fleet.on_message(data)
    assert breaker.open_remaining_s() <= RESET_S
    assert fleet._fleets["groq"].elsewhere_until <= time.monotonic() + TRIAL_TTL_S
    about_groq = isinstance(data, str) and '"p": "groq"' in data
    if not about_groq:
        assert breaker.state is BreakerState.CLOSED
