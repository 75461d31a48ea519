"""CallBounds: when one call times out, whose time ran out (the upstream's, the caller's, or
our own pool's). The waits are the event loop's own timer, a few milliseconds each."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from app.core.http import WatchedConnector
from app.core.resilience.bounds import Bound, CallBounds


async def _hang() -> None:
    await asyncio.Event().wait()


async def _cut(bounds: CallBounds, *, queue: bool = False) -> Bound | None:
    """Run a call that never answers under `bounds` (queued for a connection first if
    `queue`), and say which bound cut it."""

    async def call() -> None:
        async with bounds:
            if queue:
                bounds.queued()
            await _hang()

    with pytest.raises(TimeoutError):
        await call()
    return bounds.fired


async def test_the_upstream_had_its_whole_time() -> None:
    assert await _cut(CallBounds(0.01, 5.0, 1.0)) is Bound.UPSTREAM
    # A caller deadline exactly as long as the upstream's time leaves the verdict to it.
    assert await _cut(CallBounds(0.01, 0.01, 1.0)) is Bound.UPSTREAM


async def test_a_shorter_caller_deadline_is_the_callers() -> None:
    bounds = CallBounds(5.0, 0.01, 1.0)
    assert bounds.caller_bound
    assert await _cut(bounds) is Bound.CALLER


async def test_a_full_pool_is_ours_and_bounded_on_its_own() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    bounds = CallBounds(5.0, 5.0, 0.02)
    assert await _cut(bounds, queue=True) is Bound.POOL
    assert bounds.waiting
    assert loop.time() - started < 1.0  # the pool wait, not the upstream's 5 s


async def test_the_callers_deadline_while_queued_is_the_callers() -> None:
    bounds = CallBounds(5.0, 0.01, 1.0)
    assert await _cut(bounds, queue=True) is Bound.CALLER
    assert bounds.waiting  # never left: nothing was sent


async def test_the_upstreams_clock_is_paused_while_queued() -> None:
    """30 ms in the queue, then a 50 ms answer: inside a 60 ms upstream timeout, because the
    upstream's clock only started once the call had a connection."""
    bounds = CallBounds(0.06, 5.0, 1.0)
    async with bounds:
        bounds.queued()
        await asyncio.sleep(0.03)
        bounds.acquired()
        await asyncio.sleep(0.05)
    assert bounds.fired is None
    assert 0.025 <= bounds.queued_s < 0.5
    assert not bounds.waiting


async def test_no_timeout_no_verdict_and_late_signals_are_ignored() -> None:
    bounds = CallBounds(1.0, 1.0, 1.0)
    async with bounds:
        await asyncio.sleep(0)
    assert bounds.fired is None
    bounds.queued()  # after the call: nothing to move
    bounds.acquired()
    assert not bounds.waiting


async def test_the_pool_tells_a_watched_call_when_it_queues() -> None:
    """The real aiohttp pool, one slot, held by a first request: the second request's wait is
    seen (and bounded) by its CallBounds; nothing is sent for it."""
    held = asyncio.Event()
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        held.set()
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    async with aiohttp.ClientSession(connector=WatchedConnector(limit=1)) as session:
        first = asyncio.create_task(session.get(url))
        await held.wait()
        bounds = CallBounds(5.0, 5.0, 0.05)
        with pytest.raises(TimeoutError):
            async with bounds:
                await session.get(url)
        assert bounds.fired is Bound.POOL
        release.set()
        response = await first
        assert response.status == 200
        response.release()
    server.close()
    await server.wait_closed()
