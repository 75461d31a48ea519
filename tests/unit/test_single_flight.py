"""Single-flight blame, in process: which failures of the leader a follower shares, and
what a follower does when the failure was the leader's own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.clock import ManualClock
from app.core.errors import RateLimitExceeded
from app.core.settings import ProviderName
from app.core.telemetry import Telemetry
from app.modules.ai.cache import MemoryStore, ResponseCache, leaders_own
from app.modules.ai.domain import AIResponse, ChatMessage, CompletionRequest, Role, Usage
from app.modules.ai.errors import (
    AllProvidersFailed,
    BudgetExceeded,
    DeadlineExceeded,
    ModelNotFound,
    UnpricedModel,
    UpstreamRejected,
)
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.routing import Route

PLAN = [Route(ProviderName.GROQ, ("llama-3.1-8b-instant",))]
REQUEST = CompletionRequest(messages=(ChatMessage(Role.USER, "hello"),), temperature=0)


def _failed(*error_types: str) -> AllProvidersFailed:
    attempts = [{"provider": "groq", "error_type": e, "outcome": "error"} for e in error_types]
    return AllProvidersFailed("no provider could answer", extra={"attempts": attempts})


OWN: list[BaseException] = [
    asyncio.CancelledError(),
    DeadlineExceeded("no provider answered within 0.2s"),
    BudgetExceeded("every provider is over its daily budget", retry_after_s=2),
    RateLimitExceeded("too many requests"),
    _failed("timeout", "deadline"),
    _failed("caller_deadline"),
    _failed("upstream_error", "budget_exceeded"),
]
SHARED: list[BaseException] = [
    _failed("upstream_error", "timeout", "connection"),
    _failed("circuit_open"),
    AllProvidersFailed("none is configured"),
    ModelNotFound("no such model"),
    UnpricedModel("no price"),
    UpstreamRejected("invalid"),
    RuntimeError("a bug hits every identical caller alike"),
]


def _cache(scope: str = "shared") -> ResponseCache:
    metrics = AIMetrics(Telemetry(), frozenset())
    store = MemoryStore(ManualClock(), metrics, max_entries=10, ttl_s=60)
    return ResponseCache(store, metrics, scope=scope)  # type: ignore[arg-type]


def _response(content: str) -> AIResponse:
    return AIResponse(content, ProviderName.GROQ, "m", Usage(1, 1), 0.0, 1.0)


@pytest.mark.parametrize(("error", "own"), [(e, True) for e in OWN] + [(e, False) for e in SHARED])
def test_own_and_shared_failures(error: BaseException, own: bool) -> None:
    assert leaders_own(error) is own


ATTEMPT_KINDS = (
    "timeout",
    "upstream_error",
    "connection",
    "bad_response",
    "rate_limited",
    "not_found",
    "circuit_open",
    "no_key_available",
    "local_saturation",
    "unpriced_model",
    "deadline",
    "caller_deadline",
    "budget_exceeded",
)


@given(st.lists(st.sampled_from(ATTEMPT_KINDS), max_size=8))
def test_an_all_failed_is_the_leaders_own_exactly_when_its_deadline_or_budget_took_part(
    kinds: list[str],
) -> None:
    own = any(k in ("deadline", "caller_deadline", "budget_exceeded") for k in kinds)
    assert leaders_own(_failed(*kinds)) is own


async def _race(
    cache: ResponseCache,
    leader: Callable[[], Awaitable[AIResponse]],
    follower: Callable[[], Awaitable[AIResponse]],
    *,
    followers: int = 1,
    wait_s: float | None = None,
) -> list[tuple[AIResponse, bool] | BaseException]:
    """The leader starts; `followers` identical requests join while it is in flight."""
    first = asyncio.create_task(cache.get_or_compute(REQUEST, leader, plan=PLAN, caller="alice"))
    await asyncio.sleep(0)
    others = [
        asyncio.create_task(
            cache.get_or_compute(REQUEST, follower, plan=PLAN, caller="bob", wait_s=wait_s)
        )
        for _ in range(followers)
    ]
    return await asyncio.gather(first, *others, return_exceptions=True)


@pytest.mark.parametrize("error", [e for e in OWN if not isinstance(e, asyncio.CancelledError)])
async def test_a_follower_asks_itself_when_the_leader_fails_for_its_own_reasons(
    error: BaseException,
) -> None:
    calls = 0

    async def leader() -> AIResponse:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise error

    async def follower() -> AIResponse:
        nonlocal calls
        calls += 1
        return _response("bob's own")

    first, second = await _race(_cache(), leader, follower)
    assert first is error
    assert second == (_response("bob's own"), False)
    assert calls == 2


@pytest.mark.parametrize("error", SHARED)
async def test_a_shared_failure_reaches_the_follower_without_a_second_call(
    error: BaseException,
) -> None:
    calls = 0

    async def leader() -> AIResponse:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise error

    async def follower() -> AIResponse:
        nonlocal calls
        calls += 1
        return _response("never")

    first, second = await _race(_cache(), leader, follower)
    assert first is error
    assert second is error
    assert calls == 1


async def test_followers_of_a_failed_leader_make_one_call_between_them() -> None:
    """Five followers of a leader that missed its deadline: the first back leads the retry,
    the other four share its answer."""
    calls = 0

    async def leader() -> AIResponse:
        await asyncio.sleep(0.01)
        raise DeadlineExceeded("no provider answered within 0.2s")

    async def follower() -> AIResponse:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return _response("answer")

    results = await _race(_cache(), leader, follower, followers=5)
    assert isinstance(results[0], DeadlineExceeded)
    assert [r[1] for r in results[1:] if isinstance(r, tuple)].count(False) == 1
    assert all(isinstance(r, tuple) and r[0].content == "answer" for r in results[1:])
    assert calls == 1


async def test_a_follower_waits_no_longer_than_its_own_deadline() -> None:
    release = asyncio.Event()

    async def leader() -> AIResponse:
        await release.wait()
        return _response("alice's")

    async def follower() -> AIResponse:
        raise AssertionError("the follower never calls: it only waited too long")

    cache = _cache()
    first = asyncio.create_task(cache.get_or_compute(REQUEST, leader, plan=PLAN, caller="alice"))
    await asyncio.sleep(0)
    with pytest.raises(DeadlineExceeded):
        await cache.get_or_compute(REQUEST, follower, plan=PLAN, caller="bob", wait_s=0.01)
    assert not first.done()  # the leader goes on
    release.set()
    assert await first == (_response("alice's"), False)


async def test_a_cancelled_follower_leaves_the_leader_alone() -> None:
    release = asyncio.Event()

    async def leader() -> AIResponse:
        await release.wait()
        return _response("alice's")

    cache = _cache()
    first = asyncio.create_task(cache.get_or_compute(REQUEST, leader, plan=PLAN, caller="alice"))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.get_or_compute(REQUEST, leader, plan=PLAN, caller="bob"))
    await asyncio.sleep(0)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    release.set()
    assert await first == (_response("alice's"), False)
