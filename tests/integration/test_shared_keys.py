"""Key state shared across replicas (app.modules.ai.providers.shared_keys), against a real
redis-server: a key resting after a 429 or retired after a 401 on one replica is resting or
retired on the other within a second; a key the probe brings back is back everywhere; a late
state never undoes a newer one; a replica starting later knows, and a Redis back empty is
told again."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from app.core.clock import ManualClock
from app.core.shared import SharedState
from app.modules.ai.providers.keys import KeyState, key_id
from app.modules.ai.providers.shared_keys import (
    MAX_REST_S,
    KeySync,
    SharedKeyPool,
    SharedKeyState,
)
from tests.support.redis import RedisServer, needs_redis

pytestmark = needs_redis

KEYS = [SecretStr(f"gsk-shared-{i}") for i in range(3)]


class Replica:
    def __init__(self, url: str, prefix: str, name: str, clock: ManualClock) -> None:
        self.shared = SharedState(url, prefix=prefix, replica_id=name)
        self.sync = KeySync(self.shared, clock)
        self.pool = self.sync.pool("groq", list(KEYS))

    async def start(self) -> Replica:
        await self.shared.beat()
        await self.sync.start()
        await asyncio.wait_for(self.sync.subscribed.wait(), 2)
        return self

    async def aclose(self) -> None:
        await self.sync.aclose()
        await self.shared.aclose()


class Cluster:
    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"t{uuid.uuid4().hex[:8]}:"
        self.clock = ManualClock()
        self.replicas: list[Replica] = []

    async def replica(self, name: str) -> Replica:
        replica = await Replica(self.url, self.prefix, name, self.clock).start()
        self.replicas.append(replica)
        return replica

    async def aclose(self) -> None:
        for replica in self.replicas:
            await replica.aclose()


@pytest.fixture
async def cluster(server: RedisServer) -> AsyncIterator[Cluster]:
    made = Cluster(server.url)
    yield made
    await made.aclose()


async def _within(seconds: float, check: Callable[[], bool]) -> float:
    """How long it took until `check()` held (fails after `seconds`)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, "not seen in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def test_a_rest_after_a_429_is_seen_by_the_other_replica_within_a_second(
    cluster: Cluster,
) -> None:
    a, b = await cluster.replica("a"), await cluster.replica("b")
    key_a, key_b = next(iter(a.pool)), next(iter(b.pool))
    a.pool.rest(key_a, 30)
    assert await _within(1.0, lambda: b.pool.state(key_b) is KeyState.RESTING) < 1.0
    assert b.pool.wake_in() is None or b.pool.available() == 2
    assert [k.index for k in (b.pool.acquire(), b.pool.acquire())] == [1, 2]  # type: ignore[union-attr]
    assert key_b.resting_until - cluster.clock.monotonic() == pytest.approx(30, abs=0.5)
    cluster.clock.advance(30)
    assert b.pool.state(key_b) is KeyState.ACTIVE


async def test_a_retirement_and_the_probes_restoration_reach_every_replica(
    cluster: Cluster,
) -> None:
    a, b = await cluster.replica("a"), await cluster.replica("b")
    key_a, key_b = list(a.pool)[1], list(b.pool)[1]
    a.pool.retire(key_a)
    assert await _within(1.0, lambda: b.pool.state(key_b) is KeyState.RETIRED) < 1.0
    assert b.pool.usable() == 2
    assert key_b.retired_at is not None
    # b's probe re-checks it an interval after it heard of the refusal, not at once.
    assert b.pool.due_for_recheck(30) == []
    cluster.clock.advance(30)
    assert b.pool.due_for_recheck(30) == [key_b]
    b.pool.restore(key_b)  # the probe was accepted on b
    assert await _within(1.0, lambda: a.pool.state(key_a) is KeyState.ACTIVE) < 1.0
    assert a.pool.usable() == 3
    assert key_a.retired_at is None


async def test_a_late_state_never_undoes_a_newer_one(cluster: Cluster) -> None:
    a = await cluster.replica("a")
    key = list(a.pool)[2]
    a.pool.retire(key)
    await _within(1.0, lambda: key.version > 0)
    version = key.version
    a.pool.apply(key, SharedKeyState(version - 1, 0.0, retired=False, retired_at=None))
    assert a.pool.state(key) is KeyState.RETIRED
    a.pool.apply(key, SharedKeyState(version, 0.0, retired=False, retired_at=None))
    assert a.pool.state(key) is KeyState.RETIRED  # the same version twice: taken once


async def test_a_change_on_its_way_is_not_undone_by_an_older_state(cluster: Cluster) -> None:
    """A state heard while our own change is not yet on Redis predates it: its rest is
    taken, its 'not retired' is not."""
    a = await cluster.replica("a")
    pool: SharedKeyPool = a.pool
    key = next(iter(pool))
    pool.begin(key)  # as `retire` does before its write is sent
    key.disabled = True
    pool.apply(key, SharedKeyState(10**18, 5.0, retired=False, retired_at=None))
    assert key.disabled
    assert pool.state(key) is KeyState.RETIRED
    assert key.resting_until == pytest.approx(cluster.clock.monotonic() + 5)
    pool.end(key)


async def test_a_replica_started_later_knows_the_retired_and_resting_keys(
    cluster: Cluster,
) -> None:
    a = await cluster.replica("a")
    first, second = list(a.pool)[:2]
    a.pool.retire(first)
    a.pool.rest(second, 60)
    await _within(1.0, lambda: first.version > 0 and second.version > 0)
    c = await cluster.replica("c")
    assert [c.pool.state(k) for k in c.pool] == [
        KeyState.RETIRED,
        KeyState.RESTING,
        KeyState.ACTIVE,
    ]


async def test_a_redis_back_empty_is_told_the_key_states_again(
    server: RedisServer, cluster: Cluster
) -> None:
    a = await cluster.replica("a")
    first = next(iter(a.pool))
    a.pool.retire(first)
    await _within(1.0, lambda: first.version > 0)
    server.stop()
    await a.shared.beat()
    assert not a.shared.up
    server.start()  # empty
    await a.shared.beat()  # back: a writes what it knows
    c = await cluster.replica("c")
    await _within(2.0, lambda: c.pool.state(next(iter(c.pool))) is KeyState.RETIRED)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=10,
)
_NUMBERS = st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.binary(max_size=200)
    | _JSON.map(json.dumps)
    | st.fixed_dictionaries(
        {"p": st.just("groq"), "k": st.sampled_from([key_id(k.get_secret_value()) for k in KEYS])},
        optional={"v": _NUMBERS, "r": _NUMBERS, "x": _NUMBERS, "a": _NUMBERS},
    ).map(lambda message: json.dumps(message, allow_nan=True))
)
def test_a_hostile_message_never_raises_nor_rests_a_key_past_a_day(raw: str | bytes) -> None:
    """Whatever arrives on the channel (garbage, other JSON, a state with absurd numbers):
    no exception, a rest of a day at most, and no version Redis could not have made (one
    would shadow every later change)."""
    clock = ManualClock()
    sync = KeySync(SharedState("redis://127.0.0.1:1/0", prefix="t:"), clock)
    pool = sync.pool("groq", list(KEYS))
    sync._on_message(raw)
    for key in pool:
        assert key.resting_until <= clock.monotonic() + MAX_REST_S
        assert 0 <= key.version < 2**53
        if key.retired_at is not None:
            assert key.disabled
