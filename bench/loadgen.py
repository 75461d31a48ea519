"""Load generation: open loop at a fixed rate, and closed loop for peak throughput.

Open loop: request i is due at t0 + i/R whether or not earlier ones were answered, and its
latency is counted from that *intended* time. A closed-loop client that waits for answers
slows down exactly when the server does, so it never sees the queue it would have built
(coordinated omission); measuring from the intended time puts that queueing back in.

Time comes from `time.perf_counter()`: uvloop's `loop.time()` is cached per loop iteration
with millisecond resolution, too coarse for sub-millisecond differences.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send and what: the same messages for the baseline and the gateway."""

    name: str
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that keep a broken server from turning the benchmark into a hang."""

    request_timeout_s: float = 10.0
    max_requests: int = 20_000


@dataclass(slots=True)
class Samples:
    """What one step observed. Latencies include failed requests (time until they failed)."""

    latencies_s: list[float] = field(default_factory=list)
    send_lags_s: list[float] = field(default_factory=list)
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def errors(self) -> int:
        return sum(self.failures.values())

    @property
    def sent(self) -> int:
        return self.ok + self.errors

    @property
    def throughput(self) -> float:
        """Successful responses per second of wall time (schedule start to last answer)."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values (a step with nothing to show)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def make_session(limits: Limits, connections: int) -> aiohttp.ClientSession:
    """One keep-alive pool per target, reused across steps like a real client's would be."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, limit_per_host=0, force_close=False),
        timeout=aiohttp.ClientTimeout(total=limits.request_timeout_s),
        skip_auto_headers=("User-Agent",),
    )


async def _send(session: aiohttp.ClientSession, target: Target, samples: Samples) -> None:
    """One request; the caller records the latency, this records the outcome."""
    try:
        async with session.post(target.url, data=target.body, headers=target.headers) as resp:
            await resp.read()
            if resp.status == 200:
                samples.ok += 1
            else:
                samples.failures[f"http_{resp.status}"] += 1
    except TimeoutError:
        samples.failures["timeout"] += 1
    except aiohttp.ClientError as exc:
        samples.failures[type(exc).__name__] += 1


async def _scheduled(
    session: aiohttp.ClientSession, target: Target, intended: float, samples: Samples
) -> None:
    samples.send_lags_s.append(time.perf_counter() - intended)
    await _send(session, target, samples)
    samples.latencies_s.append(time.perf_counter() - intended)


async def open_loop(
    session: aiohttp.ClientSession,
    target: Target,
    rate: float,
    duration_s: float,
    limits: Limits,
) -> Samples:
    """Send `rate` requests per second for `duration_s` on a fixed schedule.

    Requests that are due are fired without waiting for earlier answers; the generator only
    sleeps when it is ahead of the schedule. Its own lateness is recorded as send lag, so a
    saturated generator shows up in the report instead of passing as server latency.
    """
    samples = Samples()
    total = min(int(rate * duration_s), limits.max_requests)
    tasks: list[asyncio.Task[None]] = []
    t0 = time.perf_counter() + 0.01
    for i in range(total):
        intended = t0 + i / rate
        ahead = intended - time.perf_counter()
        if ahead > 0:
            await asyncio.sleep(ahead)
        tasks.append(asyncio.create_task(_scheduled(session, target, intended, samples)))
    await _drain(tasks, samples, limits.request_timeout_s + 2.0)
    samples.elapsed_s = time.perf_counter() - t0
    return samples


async def _drain(tasks: list[asyncio.Task[None]], samples: Samples, timeout_s: float) -> None:
    """Wait for answers still in flight, bounded; what never ends is cancelled and counted."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        samples.failures["unfinished"] += len(pending)


async def closed_loop(
    session: aiohttp.ClientSession,
    target: Target,
    workers: int,
    duration_s: float,
    limits: Limits,
) -> Samples:
    """`workers` callers that each send the next request as soon as the last one answered.

    This is the shape that finds peak throughput: the server is never idle while a worker
    waits, and the in-flight count is fixed, so the rate settles where the server saturates.
    """
    samples = Samples()
    started = time.perf_counter()
    stop_at = started + duration_s

    async def worker() -> None:
        while time.perf_counter() < stop_at and samples.sent < limits.max_requests:
            begun = time.perf_counter()
            await _send(session, target, samples)
            samples.latencies_s.append(time.perf_counter() - begun)

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    await _drain(tasks, samples, duration_s + limits.request_timeout_s + 2.0)
    samples.elapsed_s = time.perf_counter() - started
    return samples
