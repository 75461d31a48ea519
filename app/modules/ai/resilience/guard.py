"""One provider's guard, composed around its adapter from outside:

    key (round-robin, resting, per-key rate limit) -> circuit breaker admission
      -> adaptive timeout around the call -> outcome booked (breaker, stats, metrics)
      -> bounded retry with jittered backoff, only when the service says no other
         provider is left and the retry budget allows

The guard is the single owner of retries; adapters never retry and the service only fails
over.

What counts as the provider's fault (a breaker verdict and a latency sample): a timeout only
when the provider had its whole adaptive timeout, 5xx, broken connections, bad bodies. Not
the provider's: the caller's own deadline when it is shorter (`caller_deadline`: released,
no sample), a cancellation, the caller's bad request, a 429 (the key rests), and time spent
waiting for a connection of our own pool (bounded by AI_POOL_WAIT_S, then the provider is
skipped as `local_saturation` and counted in `ai_local_saturation_total`).

The adaptive timeout fits the request: a non-streamed call is bounded by recent calls of its
own size class (max_tokens), a stream's opening by recent times to first text; see
`app.modules.ai.stats`.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from app.core.clock import Clock
from app.core.resilience.bounds import Bound, CallBounds
from app.core.resilience.breaker import AsyncCircuitBreaker, Ticket
from app.core.resilience.ratelimit import Limiter
from app.core.settings import ProviderName, ProviderSettings
from app.core.tracing import GEN_AI_PROVIDER_NAMES, end_span, start_client_span
from app.modules.ai.domain import Attempt, AttemptOutcome, CompletionRequest, ProviderReply
from app.modules.ai.errors import FailureKind, ProviderError
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.providers import ApiKey, KeyPool, ProviderAdapter
from app.modules.ai.providers.streaming import ProviderStream
from app.modules.ai.providers.tokens import estimate_tokens
from app.modules.ai.resilience.retry import BackoffPolicy, RetryBudget
from app.modules.ai.resilience.timeout import TimeoutPolicy
from app.modules.ai.stats import ProviderStats

# How long a key rests after a 429 that named no Retry-After.
DEFAULT_RATE_LIMIT_REST_S = 60.0
# Output tokens assumed for rate limiting when the caller set no max_tokens.
DEFAULT_COMPLETION_TOKENS = 256
# How long a call may wait for a free connection of our own pool (AI_POOL_WAIT_S).
DEFAULT_POOL_WAIT_S = 1.0
# Skip reasons (attempt error_type) for a call that never left: our pool was full until the
# pool wait ran out, or until the caller's deadline.
LOCAL_SATURATION = "local_saturation"
DEADLINE_SKIP = "deadline"


T = TypeVar("T")
# Asked only when a retryable failure happens: may this provider be retried at all?
MayRetry = Callable[[], bool]


def never() -> bool:
    return False


def _tokens(request: CompletionRequest) -> int:
    """What the call may use, for the per-key token rate limit."""
    return estimate_tokens(request.messages) + (request.max_tokens or DEFAULT_COMPLETION_TOKENS)


class ProviderSkipped(Exception):
    """The provider was not called at all; `retry_after_s` says when it may be again."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class GuardParts:
    """Everything a guard is made of, built once at start by the module."""

    breaker: AsyncCircuitBreaker
    timeout: TimeoutPolicy
    backoff: BackoffPolicy
    retry_budget: RetryBudget
    # One per key, in key order: in this process, or on Redis (shared_limits).
    key_limiters: tuple[Limiter, ...]
    stats: ProviderStats
    pool_wait_s: float = DEFAULT_POOL_WAIT_S


class GuardedProvider:
    def __init__(
        self,
        adapter: ProviderAdapter,
        keys: KeyPool,
        settings: ProviderSettings,
        parts: GuardParts,
        *,
        clock: Clock,
        rng: random.Random,
        metrics: AIMetrics,
    ) -> None:
        self.adapter = adapter
        self.keys = keys
        self.settings = settings
        self.breaker = parts.breaker
        self.stats = parts.stats
        self._timeout = parts.timeout
        self._backoff = parts.backoff
        self._budget = parts.retry_budget
        self._limiters = parts.key_limiters
        self._pool_wait_s = parts.pool_wait_s
        self._clock = clock
        self._rng = rng
        self._metrics = metrics
        # Exported from the start at 0, so rate() over them works before the first event.
        metrics.retries.add(0, {"provider": self.name.value})
        metrics.local_saturation.add(0, self.name.value)

    @property
    def name(self) -> ProviderName:
        return self.adapter.name

    def timeout_s(self) -> float:
        """The tightest adaptive timeout in force now (the gauge, health): the shortest bound
        any size class or the streams' first text has learned, or the warm-up default while
        none has. A call gets the bound of its own kind (`call_timeout_s`)."""
        policy = self._timeout
        learned = [
            window
            for window in (*self.stats.size_windows(), self.stats.first_text_latencies())
            if len(window) >= policy.min_samples
        ]
        if not learned:
            return policy.current([])
        return min(policy.current(window) for window in learned)

    def call_timeout_s(self, request: CompletionRequest, *, stream: bool = False) -> float:
        """The adaptive timeout for this call: p95 x 1.5 (clamped) of recent calls of the
        same size class (max_tokens), or of recent times to first text for a stream's
        opening; the provider's configured timeout until that window has enough samples.
        Short calls never set the bound of longer ones."""
        if stream:
            return self._timeout.current(self.stats.first_text_latencies())
        return self._timeout.current(self.stats.sized_latencies(request.max_tokens))

    def available(self) -> bool:
        """Could a call go out now (breaker admits, some key free)? Takes nothing."""
        return self.breaker.would_admit() and self.keys.available() > 0

    def retry_after_s(self) -> float | None:
        """When this provider may next be tried, if it is blocked now."""
        waits = [self.breaker.open_remaining_s()]
        if self.keys.available() == 0 and (wake := self.keys.wake_in()) is not None:
            waits.append(wake)
        wait = max(waits)
        return wait if wait > 0 else None

    async def complete(
        self,
        request: CompletionRequest,
        model: str,
        deadline: float,
        attempts: list[Attempt],
        *,
        may_retry: MayRetry = never,
    ) -> ProviderReply:
        """One model's answer, or ProviderSkipped / a classified ProviderError."""
        attempt = partial(self._attempt, request, model, deadline, attempts, _tokens(request))
        return await self._with_retries(deadline, may_retry, attempt)

    async def open_stream(
        self,
        request: CompletionRequest,
        model: str,
        deadline: float,
        attempts: list[Attempt],
        *,
        may_retry: MayRetry = never,
    ) -> ProviderStream:
        """One model's answer as an opened stream: keys, breaker, retries and the adaptive
        timeout as for `complete`, the timeout bounding the time to the first text. The caller
        books the attempt with `finish_stream` when the stream ends."""
        attempt = partial(self._open, request, model, deadline, attempts, _tokens(request))
        return await self._with_retries(deadline, may_retry, attempt)

    def finish_stream(
        self, model: str, elapsed: float, error: ProviderError | None, *, cancelled: bool = False
    ) -> None:
        """Book a stream that was opened. Its breaker ticket was settled at the first text:
        a fault after it shows in health and metrics, not in the breaker. A whole stream's
        time joins no latency window (its length is the answer's size and the caller's
        reading, not the provider's speed): it counts only as an outcome."""
        if cancelled:
            self._metrics.attempt(self.name.value, model, "cancelled", elapsed)
            return
        if error is None:
            self.stats.record(elapsed, ok=True, timed=False)
            self._metrics.attempt(self.name.value, model, "success", elapsed)
            return
        if error.kind.is_provider_fault:
            self.stats.record(elapsed, ok=False, timed=False)
        self._metrics.attempt(self.name.value, model, error.kind.value, elapsed)

    async def _with_retries(
        self, deadline: float, may_retry: MayRetry, attempt: Callable[[], Awaitable[T]]
    ) -> T:
        self._budget.record_request()
        retries = 0
        while True:
            try:
                return await attempt()
            except ProviderError as error:
                if error.kind is FailureKind.AUTH:
                    continue  # the refused key is retired; the next key gets its own try
                delay = self._retry_delay(error, retries, deadline, may_retry)
                if delay is None:
                    raise
                retries += 1
                self._metrics.retries.add(1, {"provider": self.name.value})
                await self._clock.sleep(delay)

    def _retry_delay(
        self, error: ProviderError, retries: int, deadline: float, may_retry: MayRetry
    ) -> float | None:
        """Seconds to wait before retrying, or None when this failure is final here."""
        if not (error.kind.retryable and retries < self._backoff.max_retries and may_retry()):
            return None
        # After a 429 another free key means no need to wait for this one's Retry-After.
        honour = error.retry_after_s if self.keys.available() == 0 else None
        if honour is not None and honour > self._backoff.cap_s:
            # Longer than we hold a request for a retry (AI_RETRY_CAP_S): final here, so the
            # caller fails over, or is answered at once with the upstream's Retry-After.
            return None
        delay = self._backoff.delay(retries + 1, self._rng, honour)
        if self._clock.monotonic() + delay >= deadline or not self._budget.try_spend():
            return None
        return delay

    async def _attempt(
        self,
        request: CompletionRequest,
        model: str,
        deadline: float,
        attempts: list[Attempt],
        tokens: int,
    ) -> ProviderReply:
        def call(key: ApiKey) -> Awaitable[ProviderReply]:
            return self.adapter.complete(request, model, key)

        upstream_s = self.call_timeout_s(request)
        reply, ticket, elapsed, own = await self._guarded(
            call, model, deadline, attempts, tokens, upstream_s
        )
        self.breaker.success(ticket)
        self.stats.record(own, ok=True)
        self.stats.record_sized(own, request.max_tokens)
        self._metrics.attempt(self.name.value, model, "success", elapsed)
        attempts.append(
            Attempt(
                self.name,
                model,
                AttemptOutcome.SUCCESS,
                latency_ms=elapsed * 1000,
                status_code=200,
                endpoint=self.adapter.endpoint,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
            )
        )
        return reply

    async def _open(
        self,
        request: CompletionRequest,
        model: str,
        deadline: float,
        attempts: list[Attempt],
        tokens: int,
    ) -> ProviderStream:
        def call(key: ApiKey) -> Awaitable[ProviderStream]:
            return self.adapter.stream(request, model, key)

        upstream_s = self.call_timeout_s(request, stream=True)
        stream, ticket, elapsed, own = await self._guarded(
            call, model, deadline, attempts, tokens, upstream_s
        )
        self.breaker.success(ticket)
        self.stats.record_first_text(own)
        self._metrics.first_text(self.name.value, model, elapsed)
        return stream

    async def _guarded(
        self,
        call: Callable[[ApiKey], Awaitable[T]],
        model: str,
        deadline: float,
        attempts: list[Attempt],
        tokens: int,
        upstream_s: float,
    ) -> tuple[T, Ticket, float, float]:
        """(result, breaker ticket, seconds, the provider's own seconds) of one call under a
        key, the breaker, the adaptive timeout `upstream_s`, the caller's deadline and the
        pool wait; a failure is booked, appended to `attempts` and raised."""
        ticket = self.breaker.admit()
        if ticket is None:
            raise ProviderSkipped("circuit_open", self.breaker.open_remaining_s() or None)
        try:
            key = await self._pick_key(tokens)
        except BaseException:  # skipped, or cancelled while a shared limiter asked Redis
            self.breaker.release(ticket)
            raise
        started = self._clock.monotonic()
        remaining = deadline - started
        if remaining <= 0:
            self.breaker.release(ticket)
            raise ProviderSkipped(DEADLINE_SKIP)
        bounds = CallBounds(upstream_s, remaining, self._pool_wait_s)
        # One GenAI client span per upstream try: retries and fallbacks are its siblings.
        span = start_client_span(
            f"chat {model}",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": GEN_AI_PROVIDER_NAMES[self.name.value],
                "gen_ai.request.model": model,
            },
        )
        try:
            async with bounds:
                result = await call(key)
        except TimeoutError:
            fired = bounds.fired
            if fired is not None and bounds.waiting:  # never left: our pool was full
                end_span(
                    span, error_type=LOCAL_SATURATION if fired is Bound.POOL else DEADLINE_SKIP
                )
                self.breaker.release(ticket)
                self._metrics.local_saturation.add(1, self.name.value)
                if fired is Bound.POOL:
                    raise ProviderSkipped(LOCAL_SATURATION, self._pool_wait_s) from None
                raise ProviderSkipped(DEADLINE_SKIP) from None
            if fired is Bound.CALLER:
                error = ProviderError(
                    FailureKind.CALLER_DEADLINE,
                    f"the caller's deadline ({remaining:.3f}s) came before the provider's "
                    f"timeout ({upstream_s:.2f}s)",
                )
            else:
                error = ProviderError(FailureKind.TIMEOUT, f"no answer within {upstream_s:.2f}s")
        except ProviderError as exc:
            error = exc
        except BaseException as exc:
            # Cancelled by the caller (or a bug): no verdict on the provider.
            end_span(span, error_type=type(exc).__name__)
            self.breaker.release(ticket)
            raise
        else:
            elapsed = self._clock.monotonic() - started
            if isinstance(result, ProviderStream):
                result.span = span  # ended with the stream, when its usage is known
            else:
                end_span(span, attributes=_reply_attributes(result))
            return result, ticket, elapsed, max(0.0, elapsed - bounds.queued_s)
        end_span(span, error_type=error.kind.value)
        elapsed = self._clock.monotonic() - started
        self._book_failure(error, ticket, key, model, elapsed)
        attempts.append(
            Attempt(
                self.name,
                model,
                AttemptOutcome.ERROR,
                error.kind.value,
                latency_ms=elapsed * 1000,
                status_code=error.status_code,
                endpoint=self.adapter.endpoint,
                error_message=error.message,
            )
        )
        raise error

    def _book_failure(
        self,
        error: ProviderError,
        ticket: Ticket,
        key: ApiKey,
        model: str,
        elapsed: float,
    ) -> None:
        """A failed call's verdict: only the provider's own faults count against it."""
        if error.kind.is_provider_fault:
            self.breaker.failure(ticket)
            self.stats.record(elapsed, ok=False)
        else:
            self.breaker.release(ticket)
        if error.kind is FailureKind.RATE_LIMITED:
            self.keys.rest(key, error.retry_after_s or DEFAULT_RATE_LIMIT_REST_S)
        elif error.kind is FailureKind.AUTH:
            self.keys.retire(key)
        self._metrics.attempt(self.name.value, model, error.kind.value, elapsed)

    async def _pick_key(self, tokens: int) -> ApiKey:
        """The next key that is free and under its own rate limits and daily quota (counted
        on Redis when it is shared: one script per key tried)."""
        limited: set[int] = set()
        soonest: float | None = None
        while True:
            key = self.keys.acquire(exclude=frozenset(limited))
            if key is None:
                if limited:
                    raise ProviderSkipped("rate_limited_locally", soonest)
                raise ProviderSkipped("no_key_available", self.keys.wake_in())
            # A key that joined by a reload (KeyPool.reload) carries its own limiter.
            limiter = key.limiter if key.limiter is not None else self._limiters[key.index]
            wait = await limiter.acquire(tokens)
            if wait == 0:
                return key
            limited.add(key.index)
            soonest = wait if soonest is None else min(soonest, wait)


def _reply_attributes(result: object) -> dict[str, object]:
    """GenAI response attributes of a whole answer (a stream's are known only at its end)."""
    if not isinstance(result, ProviderReply):
        return {}
    attributes: dict[str, object] = {
        "gen_ai.response.model": result.model,
        "gen_ai.usage.input_tokens": result.prompt_tokens,
        "gen_ai.usage.output_tokens": result.completion_tokens,
    }
    if result.finish_reason is not None:
        attributes["gen_ai.response.finish_reasons"] = (result.finish_reason,)
    return attributes


class ProviderGuards(dict[ProviderName, GuardedProvider]):
    """The configured providers' guards; a provider without keys has none."""
