"""Exact-match response cache with single-flight.

Keyed on the normalised request (model, messages, temperature, max_tokens, json_mode); used
when the request asks for it or its temperature is 0. Bounded by entries and age. Identical
concurrent misses make one upstream call: the first caller computes, the others await it.
The store is an interface so a shared (Redis) store can replace the in-memory one.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec

from app.core.clock import Clock
from app.modules.ai.domain import AIResponse, CompletionRequest
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.overhead import add_upstream_wait

_ENCODER = msgspec.json.Encoder()


def cache_key(request: CompletionRequest) -> str:
    normalised = [
        request.model.strip().lower(),
        [(m.role.value, m.content) for m in request.messages],
        request.temperature,
        request.max_tokens,
        request.json_mode,
    ]
    return hashlib.sha256(_ENCODER.encode(normalised)).hexdigest()


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
    def __init__(self, store: CacheStore, metrics: AIMetrics, *, enabled: bool = True) -> None:
        self._store = store
        self._metrics = metrics
        self._enabled = enabled
        self._inflight: dict[str, asyncio.Future[AIResponse]] = {}

    async def get_or_compute(
        self, request: CompletionRequest, compute: Callable[[], Awaitable[AIResponse]]
    ) -> tuple[AIResponse, bool]:
        """(response, hit). A hit is a stored answer or a share of an identical call in
        flight; a miss is this caller's own upstream call."""
        if not (self._enabled and cacheable(request)):
            return await compute(), False
        key = cache_key(request)
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
