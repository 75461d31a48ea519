"""One provider's guard: picks a key, bounds the call in time, and books the outcome.

The service asks a guard for one model's answer; the guard decides whether the provider may
be called now (a key is free) and returns the reply or a classified `ProviderError`.
"""

from __future__ import annotations

import asyncio

from app.core.clock import Clock
from app.core.settings import ProviderName, ProviderSettings
from app.modules.ai.domain import Attempt, AttemptOutcome, CompletionRequest, ProviderReply
from app.modules.ai.errors import FailureKind, ProviderError
from app.modules.ai.providers import KeyPool, ProviderAdapter
from app.modules.ai.stats import ProviderStats

# How long a key rests after a 429 that named no Retry-After.
DEFAULT_RATE_LIMIT_REST_S = 60.0


class ProviderSkipped(Exception):
    """The provider was not called at all; `retry_after_s` says when it may be again."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class GuardedProvider:
    def __init__(
        self,
        adapter: ProviderAdapter,
        keys: KeyPool,
        settings: ProviderSettings,
        clock: Clock,
        stats: ProviderStats,
    ) -> None:
        self.adapter = adapter
        self.keys = keys
        self.settings = settings
        self.stats = stats
        self._clock = clock

    @property
    def name(self) -> ProviderName:
        return self.adapter.name

    def timeout_s(self) -> float:
        return self.settings.timeout_s

    async def complete(
        self,
        request: CompletionRequest,
        model: str,
        deadline: float,
        attempts: list[Attempt],
    ) -> ProviderReply:
        """Call `model` with the next free key; a refused key is retired and the next tried."""
        while True:
            key = self.keys.acquire()
            if key is None:
                raise ProviderSkipped("no_key_available", self.keys.wake_in())
            started = self._clock.monotonic()
            budget = min(self.timeout_s(), deadline - started)
            if budget <= 0:
                raise ProviderSkipped("deadline")
            try:
                async with asyncio.timeout(budget):
                    reply = await self.adapter.complete(request, model, key)
            except TimeoutError:
                error = ProviderError(FailureKind.TIMEOUT, f"no answer within {budget:.1f}s")
            except ProviderError as exc:
                error = exc
            else:
                elapsed = self._clock.monotonic() - started
                self.stats.record(elapsed, ok=True)
                attempts.append(
                    Attempt(self.name, model, AttemptOutcome.SUCCESS, None, elapsed * 1000, 200)
                )
                return reply
            elapsed = self._clock.monotonic() - started
            attempts.append(
                Attempt(
                    self.name,
                    model,
                    AttemptOutcome.ERROR,
                    error.kind.value,
                    elapsed * 1000,
                    error.status_code,
                )
            )
            if error.kind.is_provider_fault:
                self.stats.record(elapsed, ok=False)
            if error.kind is FailureKind.RATE_LIMITED:
                self.keys.rest(key, error.retry_after_s or DEFAULT_RATE_LIMIT_REST_S)
            if error.kind is FailureKind.AUTH:
                self.keys.retire(key)
                continue
            raise error


class ProviderGuards(dict[ProviderName, GuardedProvider]):
    """The configured providers' guards; a provider without keys has none."""
