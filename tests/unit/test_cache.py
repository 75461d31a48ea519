from __future__ import annotations

import asyncio

import pytest

from app.core.clock import ManualClock
from app.core.settings import ProviderName
from app.core.telemetry import Telemetry
from app.modules.ai.cache import MemoryStore, ResponseCache, cache_key, cacheable
from app.modules.ai.domain import AIResponse, ChatMessage, CompletionRequest, Role, Usage
from app.modules.ai.metrics import AIMetrics


def _request(text: str = "hello", **kwargs: object) -> CompletionRequest:
    return CompletionRequest(messages=(ChatMessage(Role.USER, text),), **kwargs)  # type: ignore[arg-type]


def _response(content: str = "answer") -> AIResponse:
    return AIResponse(content, ProviderName.GROQ, "m", Usage(1, 1), 0.0, 1.0)


def _cache(clock: ManualClock, max_entries: int = 10, ttl_s: float = 60) -> ResponseCache:
    metrics = AIMetrics(Telemetry().meter, frozenset())
    return ResponseCache(MemoryStore(clock, metrics, max_entries=max_entries, ttl_s=ttl_s), metrics)


def test_key_is_the_normalised_request() -> None:
    assert cache_key(_request(model="fast")) == cache_key(_request(model=" FAST "))
    assert cache_key(_request()) != cache_key(_request("hello!"))
    assert cache_key(_request(temperature=0)) != cache_key(_request(temperature=0.5))
    assert cache_key(_request(json_mode=True)) != cache_key(_request())
    assert cache_key(_request(max_tokens=5)) != cache_key(_request())


def test_used_only_when_asked_or_deterministic() -> None:
    assert cacheable(_request(cache=True, temperature=0.7))
    assert cacheable(_request(temperature=0))
    assert not cacheable(_request(temperature=0.7))
    assert not cacheable(_request())


async def test_hit_after_miss_and_expiry() -> None:
    clock = ManualClock()
    cache = _cache(clock)
    calls = 0

    async def compute() -> AIResponse:
        nonlocal calls
        calls += 1
        return _response()

    request = _request(cache=True)
    assert (await cache.get_or_compute(request, compute))[1] is False
    assert (await cache.get_or_compute(request, compute))[1] is True
    clock.advance(61)
    assert (await cache.get_or_compute(request, compute))[1] is False
    assert calls == 2


async def test_size_bound_evicts_least_recently_used() -> None:
    clock = ManualClock()
    cache = _cache(clock, max_entries=2)

    async def compute() -> AIResponse:
        return _response()

    for text in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
        await cache.get_or_compute(_request(text, cache=True), compute)
    assert (await cache.get_or_compute(_request("a", cache=True), compute))[1] is True
    assert (await cache.get_or_compute(_request("b", cache=True), compute))[1] is False


async def test_identical_concurrent_misses_make_one_call() -> None:
    cache = _cache(ManualClock())
    calls = 0
    release = asyncio.Event()

    async def compute() -> AIResponse:
        nonlocal calls
        calls += 1
        await release.wait()
        return _response()

    tasks = [
        asyncio.create_task(cache.get_or_compute(_request(cache=True), compute)) for _ in range(20)
    ]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert sum(1 for _, hit in results if not hit) == 1


async def test_a_failure_is_shared_and_not_cached() -> None:
    cache = _cache(ManualClock())
    calls = 0

    async def fail() -> AIResponse:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise RuntimeError("upstream down")

    results = await asyncio.gather(
        *(cache.get_or_compute(_request(cache=True), fail) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert calls == 1
    with pytest.raises(RuntimeError):
        await cache.get_or_compute(_request(cache=True), fail)
    assert calls == 2


async def test_waiters_recompute_when_the_first_caller_is_cancelled() -> None:
    cache = _cache(ManualClock())
    started = asyncio.Event()

    async def slow() -> AIResponse:
        started.set()
        await asyncio.sleep(10)
        return _response()

    async def fast() -> AIResponse:
        return _response("second")

    leader = asyncio.create_task(cache.get_or_compute(_request(cache=True), slow))
    await started.wait()
    follower = asyncio.create_task(cache.get_or_compute(_request(cache=True), fast))
    await asyncio.sleep(0)
    leader.cancel()
    response, hit = await follower
    assert (response.content, hit) == ("second", False)
