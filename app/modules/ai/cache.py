"""Exact-match response cache with single-flight, scoped per caller.

Used when the request asks for it or its temperature is 0. Bounded by entries and age.
Identical concurrent misses make one upstream call: the first caller computes, the others
await it. The store is an interface so a shared (Redis) store can replace the in-memory one.

The key is everything that can change the answer: every field of `CompletionRequest` except
those `NOT_IN_KEY` names (each with the reason it cannot), the plan the router made for it
(the pinned route, or the alias's providers and models in strategy order), and, in the
default `caller` scope (AI_CACHE_SCOPE), the caller: one caller never gets another's answer,
stored or in flight. A new request field is in the key until someone decides otherwise here;
tests/unit/test_cache.py fails until they do.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import fields
from types import MappingProxyType
from typing import Literal, Protocol

import msgspec

from app.core.clock import Clock
from app.modules.ai.domain import AIResponse, CompletionRequest
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.overhead import add_upstream_wait
from app.modules.ai.routing import Route

_ENCODER = msgspec.json.Encoder()

CacheScope = Literal["caller", "shared"]

# Fields of CompletionRequest that cannot change the answer, and why. Everything else is keyed.
NOT_IN_KEY = MappingProxyType(
    {
        "cache": "asks for the cache; never sent upstream",
        "intent": "a label for the ledger; never sent upstream",
    }
)
KEY_FIELDS = tuple(f.name for f in fields(CompletionRequest) if f.name not in NOT_IN_KEY)


def cache_key(
    request: CompletionRequest, plan: Sequence[Route], *, caller: str | None = None
) -> str:
    """The request's identity for the cache: `caller` None is the shared scope."""
    keyed = {name: _normalised(getattr(request, name)) for name in KEY_FIELDS}
    routes = [(route.provider.value, route.models) for route in plan]
    return hashlib.sha256(_ENCODER.encode([caller, routes, keyed])).hexdigest()


def _normalised(value: object) -> object:
    """0 and 0.0 are one temperature; everything else is encoded as it is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def cacheable(request: CompletionRequest) -> bool:
    return request.cache or request.temperature == 0


class CacheStore(Protocol):
    def get(self, key: str) -> AIResponse | None: ...

    def put(self, key: str, value: AIResponse) -> None: ...


class MemoryStore:
    """LRU by entries, expiring by age on read; counts evictions."""

    def __init__(self, clock: Clock, metrics: AIMetrics, *, max_entries: int, ttl_s: float) -> None:
        self._clock = clock
        self._metrics = metrics
        self._max = max_entries
        self._ttl = ttl_s
        self._entries: OrderedDict[str, tuple[float, AIResponse]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> AIResponse | None:
        found = self._entries.get(key)
        if found is None:
            return None
        stored_at, value = found
        if self._clock.monotonic() - stored_at > self._ttl:
            del self._entries[key]
            self._metrics.cache_evictions.add(1, {"reason": "expired"})
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: AIResponse) -> None:
        self._entries[key] = (self._clock.monotonic(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
            self._metrics.cache_evictions.add(1, {"reason": "size"})


class ResponseCache:
    def __init__(
        self,
        store: CacheStore,
        metrics: AIMetrics,
        *,
        enabled: bool = True,
        scope: CacheScope = "caller",
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._enabled = enabled
        self._per_caller = scope == "caller"
        self._inflight: dict[str, asyncio.Future[AIResponse]] = {}

    async def get_or_compute(
        self,
        request: CompletionRequest,
        compute: Callable[[], Awaitable[AIResponse]],
        *,
        plan: Sequence[Route],
        caller: str,
    ) -> tuple[AIResponse, bool]:
        """(response, hit). A hit is a stored answer or a share of an identical call in
        flight (of the same caller, in `caller` scope); a miss is this caller's own upstream
        call. `plan` is the route the router made for `request`."""
        if not (self._enabled and cacheable(request)):
            return await compute(), False
        key = cache_key(request, plan, caller=caller if self._per_caller else None)
        stored = self._store.get(key)
        if stored is not None:
            self._metrics.cache_requests.add(1, {"result": "hit"})
            return stored, True
        pending = self._inflight.get(key)
        if pending is not None:
            self._metrics.cache_requests.add(1, {"result": "hit"})
            waited_from = time.perf_counter()
            try:
                try:
                    return await asyncio.shield(pending), True
                finally:  # waiting on the leader's upstream call is an upstream wait
                    add_upstream_wait(time.perf_counter() - waited_from)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise
                return await compute(), False  # the first caller went away: ask ourselves
        self._metrics.cache_requests.add(1, {"result": "miss"})
        future: asyncio.Future[AIResponse] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            response = await compute()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters get it, nobody else must
            raise
        else:
            self._store.put(key, response)
            future.set_result(response)
            return response, False
        finally:
            del self._inflight[key]
