"""Redis' connections reset under the service's own event loop (uvloop), found by the chaos
scenario `redis_down`: the gateway must see a Redis that is down, not crash.

Under uvloop a pooled redis-py connection whose peer reset it (a network cut, a firewall,
a crashed host: TCP RST) raises `RuntimeError` ("the handler is closed") on its next write,
where the standard loop raises a `ConnectionError`. Before `SharedState` counted it as a
failure of Redis, it escaped: the heartbeat ticker died (the replica stayed `up` while cut
off, and stopped being counted by the others), reconciliation callbacks failed, and a request
meeting it got a 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from app.core.shared import SharedState, SharedStateDown
from tests.chaos.proxy import FaultProxy
from tests.support.redis import RedisServer, needs_redis

uvloop = pytest.importorskip("uvloop")

pytestmark = needs_redis

HEARTBEAT_S = 0.1


@pytest.fixture
def proxied() -> Iterator[tuple[RedisServer, FaultProxy]]:
    server = RedisServer().start()
    proxy = FaultProxy("127.0.0.1", server.port).start()
    yield server, proxy
    proxy.stop()
    server.stop()


def test_connections_reset_under_uvloop_are_redis_down_then_back(
    proxied: tuple[RedisServer, FaultProxy],
) -> None:
    """Pooled connections reset by the network: the heartbeat marks Redis down (and keeps
    beating), a command raises SharedStateDown, nothing else; once the network is back the
    heartbeat finds Redis again."""
    _, proxy = proxied
    seen: dict[str, object] = {}

    async def scenario() -> None:
        state = SharedState(
            f"redis://127.0.0.1:{proxy.port}/0", prefix="reset:", heartbeat_s=HEARTBEAT_S
        )
        try:
            await state.start()
            # Several pooled connections, as concurrent requests leave them.
            await asyncio.gather(*(state.call("PING") for _ in range(4)))
            proxy.set(refuse=True)  # every open connection reset, new ones refused
            await asyncio.sleep(4 * HEARTBEAT_S)
            seen["up while cut"] = state.up
            try:
                await state.call("PING")
            except SharedStateDown:
                seen["call while cut"] = "SharedStateDown"
            proxy.clear()
            await asyncio.sleep(4 * HEARTBEAT_S)
            seen["up after"] = state.up
            ticker = state._ticker
            seen["ticker alive"] = ticker is not None and not ticker.done()
        finally:
            if state._ticker is not None and state._ticker.done():
                state._ticker.exception()  # retrieved: reported below, not as a warning
                state._ticker = None
            await state.aclose()

    uvloop.run(scenario())
    assert seen == {
        "up while cut": False,
        "call while cut": "SharedStateDown",
        "up after": True,
        "ticker alive": True,
    }
