"""Exact-match response cache with single-flight, scoped per caller.

Used when the request asks for it or its temperature is 0. Bounded by entries and age.
Identical concurrent misses make one upstream call: the first caller (the leader) computes,
the others (followers) await it. The store is an interface: `MemoryStore` (this process,
LRU by entries) or, with REDIS_URL, `RedisStore` (every worker and replica sees one cache:
an answer cached through one is a hit through another, same keys and scope, expiring by
AI_CACHE_TTL_S in Redis).

Single-flight is per process, with either store: identical misses on two replicas at the same
moment make two upstream calls (one per replica), and the second answer overwrites the first
under the same key. Spanning replicas would need a Redis lock and a wait for its holder's
answer on every miss; the gain is bounded by the number of replicas for the rare identical
requests that arrive within one upstream latency of each other, so it is not done.

The key is everything that can change the answer: every field of `CompletionRequest` except
those `NOT_IN_KEY` names (each with the reason it cannot), the plan the router made for it
(the pinned route, or the alias's providers and models in strategy order), and, in the
default `caller` scope (AI_CACHE_SCOPE), the caller: one caller never gets another's answer,
stored or in flight. A new request field is in the key until someone decides otherwise here;
tests/unit/test_cache.py fails until they do.

Blame in single-flight. A follower shares the leader's *answer*, never the leader's
circumstances. Followers may differ from the leader in deadline, in caller (`shared` scope)
and so in per-caller budget, and each can be cancelled on its own. So:

- a success is shared (and stored);
- a failure that is the leader's own is not: the follower makes its own attempt (or follows
  whichever follower asks first), as if the leader had never asked. The leader's own:
  its cancellation, its deadline (DeadlineExceeded, or an AllProvidersFailed in which an
  attempt was skipped or cut short by the leader's deadline: `deadline`, `caller_deadline`),
  its budget (BudgetExceeded, or a provider skipped with `budget_exceeded`: per-caller
  budgets differ between callers, and money held by the leader's own reservations is
  released by the time a follower asks) and any other 429 aimed at the caller
  (RateLimitExceeded). See `leaders_own`;
- every other failure is shared: AllProvidersFailed from upstream faults (5xx, timeouts of
  the provider's own adaptive timeout, connection errors, open breakers), ModelNotFound,
  UnpricedModel, UpstreamRejected, and anything unexpected. These say the same about an
  identical request whoever asks, and repeating them would only add load to an upstream
  already failing.

A follower waits at most its own deadline (`wait_s`): a leader with a longer deadline never
keeps a follower past its own; it gets DeadlineExceeded, and the leader carries on.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import fields
from types import MappingProxyType
from typing import Literal, Protocol

import msgspec
from cachetools import TTLCache

from app.core.clock import Clock
from app.core.errors import RateLimitExceeded
from app.core.shared import SharedState, SharedStateDown
from app.modules.ai.domain import AIResponse, CompletionRequest
from app.modules.ai.errors import AllProvidersFailed, DeadlineExceeded
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


# Attempt `error_type`s that say more about the caller than about the answer: a provider
# skipped or cut short for the caller's deadline, or skipped for a budget (per-caller budgets
# differ between callers; the leader's own reservations are released once it has failed).
LEADER_BOUND_ATTEMPTS = frozenset({"deadline", "caller_deadline", "budget_exceeded"})


def leaders_own(error: BaseException) -> bool:
    """The leader's failure is its own (a follower asks for itself) rather than a fact about
    the request that every identical caller would meet (shared). See the module docstring."""
    if isinstance(error, asyncio.CancelledError | DeadlineExceeded | RateLimitExceeded):
        return True
    if isinstance(error, AllProvidersFailed):
        attempts = error.extra.get("attempts", ())
        return any(
            isinstance(a, dict) and a.get("error_type") in LEADER_BOUND_ATTEMPTS for a in attempts
        )
    return False


class CacheStore(Protocol):
    async def get(self, key: str) -> AIResponse | None: ...

    async def put(self, key: str, value: AIResponse) -> None: ...


class _CountedTTLCache(TTLCache[str, AIResponse, float]):
    """cachetools' TTL + LRU table on the injected clock, counting what it drops and why."""

    def __init__(self, clock: Clock, metrics: AIMetrics, *, max_entries: int, ttl_s: float):
        super().__init__(maxsize=max_entries, ttl=ttl_s, timer=clock.monotonic)
        self._metrics = metrics

    def expire(self, time: float | None = None) -> list[tuple[str, AIResponse]]:
        expired = super().expire(time)
        if expired:
            self._metrics.cache_evictions.add(len(expired), {"reason": "expired"})
        return expired

    def popitem(self) -> tuple[str, AIResponse]:
        # Called by cachetools only when an insert overflows max_entries (least recently used).
        item = super().popitem()
        self._metrics.cache_evictions.add(1, {"reason": "size"})
        return item


class MemoryStore:
    """This process's answers: LRU by entries, expiring by age (cachetools' TTLCache on the
    injected clock); counts evictions by reason (`expired`, `size`)."""

    def __init__(self, clock: Clock, metrics: AIMetrics, *, max_entries: int, ttl_s: float) -> None:
        self._entries = _CountedTTLCache(clock, metrics, max_entries=max_entries, ttl_s=ttl_s)

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> AIResponse | None:
        return self.get_now(key)

    async def put(self, key: str, value: AIResponse) -> None:
        self.put_now(key, value)

    def get_now(self, key: str) -> AIResponse | None:
        """`get` without a suspension point (the in-memory store never waits)."""
        return self._entries.get(key)

    def put_now(self, key: str, value: AIResponse) -> None:
        self._entries[key] = value


class RedisStore:
    """Answers in Redis (msgpack, with AI_CACHE_TTL_S as their TTL), so every worker and
    replica shares them; Redis bounds memory (set a `maxmemory-policy` such as
    `volatile-lru`), not AI_CACHE_MAX_ENTRIES.

    A cache must never turn a Redis problem into an error: while Redis is unreachable
    (`SharedState.up` false, or an operation fails within REDIS_TIMEOUT_S) lookups and writes
    go to `local`, this process's MemoryStore, so the cache keeps working per replica; a
    value that cannot be decoded (written by another version) is a miss.
    """

    def __init__(
        self, shared: SharedState, local: MemoryStore, metrics: AIMetrics, *, ttl_s: float
    ) -> None:
        self._shared = shared
        self._local = local
        self._metrics = metrics
        self._ttl_ms = max(1, int(ttl_s * 1000))

    def _key(self, key: str) -> str:
        return self._shared.key("cache", key)

    async def get(self, key: str) -> AIResponse | None:
        if not self._shared.up:
            return self._local.get_now(key)
        try:
            raw = await self._shared.call("GET", self._key(key))
        except SharedStateDown:
            return self._local.get_now(key)
        if raw is None:
            return None
        try:
            return _DECODER.decode(raw)
        except msgspec.DecodeError:
            self._metrics.cache_evictions.add(1, {"reason": "unreadable"})
            return None

    async def put(self, key: str, value: AIResponse) -> None:
        if not self._shared.up:
            self._local.put_now(key, value)
            return
        try:
            await self._shared.call(
                "SET", self._key(key), _PACKER.encode(value), "PX", self._ttl_ms
            )
        except SharedStateDown:
            self._local.put_now(key, value)


_PACKER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(AIResponse)


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
        wait_s: float | None = None,
    ) -> tuple[AIResponse, bool]:
        """(response, hit). A hit is a stored answer or a share of an identical call's answer
        in flight (of the same caller, in `caller` scope); a miss is this caller's own upstream
        call. `plan` is the route the router made for `request`; `wait_s`, the caller's time
        left, bounds how long it waits on someone else's call (DeadlineExceeded after it)."""
        if not (self._enabled and cacheable(request)):
            return await compute(), False
        key = cache_key(request, plan, caller=caller if self._per_caller else None)
        loop = asyncio.get_running_loop()
        until = None if wait_s is None else loop.time() + wait_s
        while True:
            stored = await self._store.get(key)
            if stored is not None:
                self._metrics.cache_requests.add(1, {"result": "hit"})
                return stored, True
            pending = self._inflight.get(key)
            if pending is None:
                return await self._lead(key, compute), False
            shared = await self._follow(pending, until)
            if shared is not None:
                self._metrics.cache_requests.add(1, {"result": "hit"})
                return shared, True
            # The leader failed for reasons of its own: ask again, as if it had never asked
            # (the first follower back leads, the others follow it).

    async def _lead(self, key: str, compute: Callable[[], Awaitable[AIResponse]]) -> AIResponse:
        """Make the call, and hand its outcome to everyone who joins while it runs."""
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
            future.set_result(response)
            # Still in flight until stored: a lookup that missed the store while the write
            # was on its way finds the answer here instead of making a second call.
            await self._store.put(key, response)
            return response
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]

    async def _follow(
        self, pending: asyncio.Future[AIResponse], until: float | None
    ) -> AIResponse | None:
        """The leader's answer, or None when it failed for reasons of its own; a shared
        failure is raised. Our own cancellation propagates and leaves the leader alone."""
        loop = asyncio.get_running_loop()
        waited_from = time.perf_counter()
        try:
            timeout = None if until is None else max(0.0, until - loop.time())
            await asyncio.wait([pending], timeout=timeout)
        finally:  # waiting on the leader's upstream call is an upstream wait
            add_upstream_wait(time.perf_counter() - waited_from)
        if not pending.done():
            raise DeadlineExceeded(
                "no answer within the request's deadline (an identical call in flight, with a "
                "longer deadline, is still running)"
            )
        if pending.cancelled():
            return None
        error = pending.exception()
        if error is None:
            return pending.result()
        if leaders_own(error):
            return None
        raise error
