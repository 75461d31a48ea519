"""The Redis handle every shared guard goes through, against a real redis-server: scripts by
SHA (reloaded after Redis restarts empty), short timeouts without retries, up/down with one
reconciliation per return, and replicas counted by expiring heartbeats."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from app.core.shared import SharedState, SharedStateDown
from tests.support.redis import RedisServer, needs_redis

pytestmark = needs_redis

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_a_script_runs_by_sha_and_survives_a_restart_empty(server: RedisServer) -> None:
    state = SharedState(server.url, prefix="t:")
    incr = state.script(INCR)
    try:
        assert await state.run(incr, [state.key("n")], [2]) == 2
        assert await state.run(incr, [state.key("n")], [3]) == 5
        assert state.up
        server.stop()
        with pytest.raises(SharedStateDown):
            await state.run(incr, [state.key("n")], [1])
        assert not state.up
        server.start()  # same port, nothing in it: the script is loaded again (NOSCRIPT)
        assert await state.run(incr, [state.key("n")], [1]) == 1
        assert state.up
    finally:
        await state.aclose()


async def test_after_a_restart_the_pool_holds_no_connection_to_the_redis_that_died(
    server: RedisServer,
) -> None:
    """Eight connections in the pool when Redis dies; the first failure says it is down.
    Once it is back, a burst of eight calls all succeed: none goes out on a socket the old
    server closed (each such failure would be one more outage for the budgets)."""
    state = SharedState(server.url, prefix="t:", timeout_s=0.5)
    incr = state.script(INCR)
    try:
        await asyncio.gather(*(state.run(incr, [state.key("n")], [1]) for _ in range(8)))
        server.stop()
        with pytest.raises(SharedStateDown):
            await state.run(incr, [state.key("n")], [1])
        server.start()
        assert await state.run(incr, [state.key("n")], [1]) == 1
        results = await asyncio.gather(
            *(state.run(incr, [state.key("n")], [1]) for _ in range(8)), return_exceptions=True
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert sorted(int(r) for r in results) == list(range(2, 10))
        assert state.up
    finally:
        await state.aclose()


async def test_a_stalled_redis_fails_fast_and_comes_back(server: RedisServer) -> None:
    state = SharedState(server.url, prefix="t:", timeout_s=0.05)
    incr = state.script(INCR)
    returns: list[bool] = []

    async def reconcile() -> None:
        returns.append(True)

    state.on_up(reconcile)
    try:
        await state.run(incr, [state.key("n")], [1])
        await asyncio.sleep(0)
        assert returns == [True]
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)  # alive, but answers nothing
        try:
            started = time.perf_counter()
            with pytest.raises(SharedStateDown):
                await state.run(incr, [state.key("n")], [1])
            assert time.perf_counter() - started < 0.5  # the timeout, not a retry loop
            with pytest.raises(SharedStateDown):
                await state.call("GET", state.key("n"))
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        for _ in range(100):  # the stalled connection is dropped; a new one works
            try:
                await state.run(incr, [state.key("n")], [1])
                break
            except SharedStateDown:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0)
        assert state.up
        assert returns == [True, True]  # once per return, not per call
    finally:
        await state.aclose()


async def test_replicas_are_counted_by_expiring_heartbeats(server: RedisServer) -> None:
    a = SharedState(server.url, prefix="t:", heartbeat_s=0.1, replica_id="a")
    b = SharedState(server.url, prefix="t:", heartbeat_s=0.1, replica_id="b")
    try:
        await a.beat()
        await b.beat()
        await a.beat()
        assert a.live_replicas == 2
        await b.aclose()  # leaves at once
        await a.beat()
        assert a.live_replicas == 1
        c = SharedState(server.url, prefix="t:", heartbeat_s=0.1, replica_id="c")
        await c.beat()
        await a.beat()
        assert a.live_replicas == 2
        await c._client.aclose()  # killed: no goodbye, its heartbeat expires (3 x 0.1 s)
        await asyncio.sleep(0.45)
        await a.beat()
        assert a.live_replicas == 1
    finally:
        await a.aclose()


async def test_a_caller_cancelled_mid_call_is_cancelled(server: RedisServer) -> None:
    """A request whose caller went away stops at once, even inside a Redis call: none of these
    cancellations may be swallowed (redis-py's socket timeout path did swallow some)."""
    state = SharedState(server.url, prefix="t:")
    incr = state.script(INCR)
    try:
        await state.run(incr, [state.key("n")], [1])
        finished_normally = 0
        for _ in range(200):
            task = asyncio.create_task(state.run(incr, [state.key("n")], [1]))
            await asyncio.sleep(0)  # the command is on its way
            task.cancel()
            try:
                await task
                finished_normally += 1
            except asyncio.CancelledError:
                pass
            except SharedStateDown:
                pass
        assert finished_normally == 0
        assert await state.run(incr, [state.key("n")], [0]) >= 1  # the pool still works
    finally:
        await state.aclose()


async def test_a_burst_beyond_the_pool_waits_for_a_connection(server: RedisServer) -> None:
    """More calls at once than the pool has connections: they queue for one (within the
    timeout) instead of failing, so a burst never makes a healthy Redis look down."""
    state = SharedState(server.url, prefix="t:", timeout_s=5)
    slow = state.script("redis.call('INCR', KEYS[1]); return redis.call('GET', KEYS[1])")
    try:
        results = await asyncio.gather(
            *(state.run(slow, [state.key("burst")], []) for _ in range(600)),
            return_exceptions=True,
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert state.up
        assert int(await state.call("GET", state.key("burst"))) == 600
    finally:
        await state.aclose()
