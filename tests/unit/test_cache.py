from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import fields, replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.clock import ManualClock
from app.core.settings import ProviderName, RoutingStrategy
from app.core.telemetry import Telemetry
from app.modules.ai.cache import (
    KEY_FIELDS,
    NOT_IN_KEY,
    CacheScope,
    MemoryStore,
    ResponseCache,
    cache_key,
    cacheable,
)
from app.modules.ai.domain import (
    AIResponse,
    ChatMessage,
    CompletionRequest,
    Intent,
    ResponseSchema,
    Role,
    Usage,
)
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.routing import Route

PLAN = [Route(ProviderName.GROQ, ("llama-3.1-8b-instant",)), Route(ProviderName.OPENAI, ("m",))]

# The decision record for every field of CompletionRequest that is in the cache key: a value
# that differs from `_request()`'s, so the test below can show the field changes the key. A
# new field of the request fails `test_every_request_field_is_decided` until it is added here
# (it changes the answer) or to cache.NOT_IN_KEY (it cannot, with the reason).
CHANGED: dict[str, Any] = {
    "messages": (ChatMessage(Role.SYSTEM, "be terse"), ChatMessage(Role.USER, "hello")),
    "model": "quality",
    "temperature": 0.5,
    "max_tokens": 5,
    "json_mode": True,
    "strategy": RoutingStrategy.COST,
    # A different schema asks for a different answer.
    "response_schema": ResponseSchema("paper", {"type": "object"}),
}
# And for every field left out of the key, a value that must not change it.
UNKEYED: dict[str, Any] = {"cache": True, "intent": Intent.VALIDATION}


def _request(text: str = "hello", **kwargs: object) -> CompletionRequest:
    return CompletionRequest(messages=(ChatMessage(Role.USER, text),), **kwargs)  # type: ignore[arg-type]


def _response(content: str = "answer") -> AIResponse:
    return AIResponse(content, ProviderName.GROQ, "m", Usage(1, 1), 0.0, 1.0)


def _cache(
    clock: ManualClock, max_entries: int = 10, ttl_s: float = 60, scope: CacheScope = "caller"
) -> ResponseCache:
    metrics = AIMetrics(Telemetry(), frozenset())
    return ResponseCache(
        MemoryStore(clock, metrics, max_entries=max_entries, ttl_s=ttl_s), metrics, scope=scope
    )


async def _ask(
    cache: ResponseCache,
    request: CompletionRequest,
    compute: Callable[[], Awaitable[AIResponse]],
    *,
    caller: str = "alice",
    plan: Sequence[Route] = PLAN,
) -> tuple[AIResponse, bool]:
    return await cache.get_or_compute(request, compute, plan=plan, caller=caller)


def test_every_request_field_is_decided() -> None:
    """Adding a field to CompletionRequest fails here until someone says whether it changes
    the answer (CHANGED above) or cannot (cache.NOT_IN_KEY)."""
    declared = {f.name for f in fields(CompletionRequest)}
    assert set(CHANGED).isdisjoint(NOT_IN_KEY)
    assert declared == set(CHANGED) | set(NOT_IN_KEY)
    assert set(KEY_FIELDS) == set(CHANGED)
    assert set(UNKEYED) == set(NOT_IN_KEY)


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_each_keyed_field_changes_the_key(name: str) -> None:
    base = _request()
    assert cache_key(base, PLAN) != cache_key(replace(base, **{name: CHANGED[name]}), PLAN)


@pytest.mark.parametrize("name", sorted(UNKEYED))
def test_fields_that_cannot_change_the_answer_leave_the_key(name: str) -> None:
    base = _request()
    assert cache_key(base, PLAN) == cache_key(replace(base, **{name: UNKEYED[name]}), PLAN)


def test_key_holds_the_plan_and_the_caller() -> None:
    request = _request()
    assert cache_key(request, PLAN) != cache_key(request, PLAN[::-1])  # another strategy order
    pinned = [Route(ProviderName.OPENAI, ("gpt-4o-mini",))]
    assert cache_key(request, pinned) != cache_key(
        request, [Route(ProviderName.AZURE, ("gpt-4o-mini",))]
    )
    keys = {cache_key(request, PLAN, caller=c) for c in ("alice", "bob", None)}
    assert len(keys) == 3
    assert cache_key(_request(temperature=0), PLAN) == cache_key(_request(temperature=0.0), PLAN)


_texts = st.sampled_from(["a", "b"])
_requests = st.builds(
    CompletionRequest,
    messages=st.lists(
        st.builds(ChatMessage, st.sampled_from([Role.SYSTEM, Role.USER]), _texts),
        min_size=1,
        max_size=2,
    ).map(tuple),
    model=st.sampled_from(["fast", "quality", "gpt-4o-mini"]),
    temperature=st.sampled_from([None, 0.0, 0.7]),
    max_tokens=st.sampled_from([None, 5]),
    json_mode=st.booleans(),
    intent=st.sampled_from([None, Intent.ANALYSIS]),
    strategy=st.sampled_from([None, RoutingStrategy.COST, RoutingStrategy.PRIORITY]),
    cache=st.booleans(),
)


@given(_requests, _requests, st.sampled_from(["alice", "bob"]), st.sampled_from(["alice", "bob"]))
def test_two_requests_share_a_key_exactly_when_every_keyed_field_and_caller_match(
    first: CompletionRequest, second: CompletionRequest, caller_a: str, caller_b: str
) -> None:
    same = caller_a == caller_b and all(
        getattr(first, name) == getattr(second, name) for name in KEY_FIELDS
    )
    assert same == (
        cache_key(first, PLAN, caller=caller_a) == cache_key(second, PLAN, caller=caller_b)
    )


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
    assert (await _ask(cache, request, compute))[1] is False
    assert (await _ask(cache, request, compute))[1] is True
    clock.advance(61)
    assert (await _ask(cache, request, compute))[1] is False
    assert calls == 2


async def test_size_bound_evicts_least_recently_used() -> None:
    clock = ManualClock()
    cache = _cache(clock, max_entries=2)

    async def compute() -> AIResponse:
        return _response()

    for text in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
        await _ask(cache, _request(text, cache=True), compute)
    assert (await _ask(cache, _request("a", cache=True), compute))[1] is True
    assert (await _ask(cache, _request("b", cache=True), compute))[1] is False


async def test_identical_concurrent_misses_make_one_call() -> None:
    cache = _cache(ManualClock())
    calls = 0
    release = asyncio.Event()

    async def compute() -> AIResponse:
        nonlocal calls
        calls += 1
        await release.wait()
        return _response()

    tasks = [asyncio.create_task(_ask(cache, _request(cache=True), compute)) for _ in range(20)]
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
        *(_ask(cache, _request(cache=True), fail) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert calls == 1
    with pytest.raises(RuntimeError):
        await _ask(cache, _request(cache=True), fail)
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

    leader = asyncio.create_task(_ask(cache, _request(cache=True), slow))
    await started.wait()
    follower = asyncio.create_task(_ask(cache, _request(cache=True), fast))
    await asyncio.sleep(0)
    leader.cancel()
    response, hit = await follower
    assert (response.content, hit) == ("second", False)


async def test_a_caller_never_gets_another_callers_answer() -> None:
    cache = _cache(ManualClock())
    answers = iter(["for alice", "for bob"])

    async def compute() -> AIResponse:
        return _response(next(answers))

    request = _request(temperature=0)
    assert await _ask(cache, request, compute, caller="alice") == (_response("for alice"), False)
    assert await _ask(cache, request, compute, caller="bob") == (_response("for bob"), False)
    assert await _ask(cache, request, compute, caller="alice") == (_response("for alice"), True)


async def test_shared_scope_shares_between_callers() -> None:
    cache = _cache(ManualClock(), scope="shared")

    async def compute() -> AIResponse:
        return _response()

    assert (await _ask(cache, _request(temperature=0), compute, caller="alice"))[1] is False
    assert (await _ask(cache, _request(temperature=0), compute, caller="bob"))[1] is True


@pytest.mark.parametrize(("scope", "expected_calls"), [("caller", 2), ("shared", 1)])
async def test_single_flight_is_scoped_like_the_store(
    scope: CacheScope, expected_calls: int
) -> None:
    cache = _cache(ManualClock(), scope=scope)
    calls = 0
    release = asyncio.Event()

    async def compute() -> AIResponse:
        nonlocal calls
        calls += 1
        await release.wait()
        return _response()

    tasks = [
        asyncio.create_task(_ask(cache, _request(cache=True), compute, caller=caller))
        for caller in ("alice", "bob", "alice", "bob")
    ]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    assert calls == expected_calls
