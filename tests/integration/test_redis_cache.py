"""The response cache on a real redis-server: two replicas (each its own SharedState and
ResponseCache) share answers under the same keys and scope, Redis keeps the TTL, and Redis
trouble is never an error: an unreadable value is a miss, an unreachable Redis is this
process's memory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from app.core.clock import ManualClock
from app.core.settings import ProviderName
from app.core.shared import SharedState
from app.core.telemetry import Telemetry
from app.modules.ai.cache import MemoryStore, RedisStore, ResponseCache, cache_key
from app.modules.ai.domain import (
    AIResponse,
    Attempt,
    AttemptOutcome,
    ChatMessage,
    CompletionRequest,
    Role,
    Usage,
)
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.routing import Route
from tests.support.redis import RedisServer, needs_redis

pytestmark = needs_redis

PLAN = [Route(ProviderName.GROQ, ("llama-3.1-8b-instant",))]
TTL_S = 60.0


@dataclass
class Replica:
    shared: SharedState
    cache: ResponseCache
    store: RedisStore
    calls: list[str] = field(default_factory=list)

    async def ask(
        self, request: CompletionRequest, *, caller: str = "alice", answer: str = "answer"
    ) -> tuple[AIResponse, bool]:
        async def compute() -> AIResponse:
            self.calls.append(answer)
            return _response(answer)

        return await self.cache.get_or_compute(request, compute, plan=PLAN, caller=caller)


@pytest.fixture
async def replicas(
    redis: RedisServer,
) -> AsyncIterator[Callable[..., Awaitable[Replica]]]:
    prefix = f"c{uuid.uuid4().hex[:8]}:"
    made: list[SharedState] = []

    async def replica(scope: str = "caller") -> Replica:
        shared = SharedState(redis.url, prefix=prefix)
        await shared.beat()
        made.append(shared)
        metrics = AIMetrics(Telemetry(), frozenset())
        local = MemoryStore(ManualClock(), metrics, max_entries=10, ttl_s=TTL_S)
        store = RedisStore(shared, local, metrics, ttl_s=TTL_S)
        return Replica(shared, ResponseCache(store, metrics, scope=scope), store)  # type: ignore[arg-type]

    yield replica
    for shared in made:
        await shared.aclose()


def _request(text: str = "hello") -> CompletionRequest:
    return CompletionRequest(messages=(ChatMessage(Role.USER, text),), cache=True)


def _response(content: str) -> AIResponse:
    return AIResponse(
        content,
        ProviderName.GROQ,
        "llama-3.1-8b-instant",
        Usage(3, 5),
        0.0,
        12.5,
        attempts=(Attempt(ProviderName.GROQ, "llama-3.1-8b-instant", AttemptOutcome.SUCCESS),),
        finish_reason="stop",
    )


async def test_an_answer_cached_by_one_replica_is_a_hit_on_the_other_with_its_ttl(
    replicas: Callable[..., Awaitable[Replica]],
) -> None:
    a, b = await replicas(), await replicas()
    assert await a.ask(_request()) == (_response("answer"), False)
    assert await b.ask(_request(), answer="other") == (_response("answer"), True)
    assert b.calls == []
    key = a.shared.key("cache", cache_key(_request(), PLAN, caller="alice"))
    ttl_ms = await a.shared.call("PTTL", key)
    assert TTL_S * 1000 - 5000 < ttl_ms <= TTL_S * 1000


async def test_the_scope_holds_across_replicas(
    replicas: Callable[..., Awaitable[Replica]],
) -> None:
    a, b = await replicas("caller"), await replicas("caller")
    await a.ask(_request(), caller="alice")
    assert (await b.ask(_request(), caller="bob", answer="for bob"))[1] is False
    assert b.calls == ["for bob"]
    shared_a, shared_b = await replicas("shared"), await replicas("shared")
    await shared_a.ask(_request("shared scope"), caller="alice")
    assert (await shared_b.ask(_request("shared scope"), caller="bob"))[1] is True


async def test_an_unreadable_value_is_a_miss(
    replicas: Callable[..., Awaitable[Replica]],
) -> None:
    a = await replicas()
    key = a.shared.key("cache", cache_key(_request(), PLAN, caller="alice"))
    await a.shared.call("SET", key, b"\xc1 not msgpack", "PX", 60_000)
    assert await a.ask(_request(), answer="fresh") == (_response("fresh"), False)
    assert (await a.ask(_request()))[1] is True  # the fresh answer replaced it


async def test_an_unreachable_redis_is_this_processs_memory_never_an_error(
    replicas: Callable[..., Awaitable[Replica]], redis: RedisServer
) -> None:
    a, b = await replicas(), await replicas()
    redis.stop()
    # The first operation finds Redis gone and marks it down; the answer is still given.
    assert await a.ask(_request("while down")) == (_response("answer"), False)
    assert not a.shared.up
    assert (await a.ask(_request("while down")))[1] is True  # from this process's memory
    await b.shared.beat()
    assert (await b.ask(_request("while down")))[1] is False  # B has its own memory
    redis.start()
    await a.shared.beat()
    assert a.shared.up
    # Back (empty): Redis is A's store again, and A's memory is not consulted.
    assert (await a.ask(_request("while down"), answer="again"))[1] is False
    # B learns it at its next heartbeat (its memory serves until then), then shares A's.
    await b.shared.beat()
    assert await b.ask(_request("while down")) == (_response("again"), True)
