"""UnifiedAIService: one call in, the cheapest working provider's answer out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from app.core.clock import Clock
from app.core.settings import ProviderName, Settings
from app.modules.ai.domain import (
    AIResponse,
    Attempt,
    AttemptOutcome,
    CompletionRequest,
    Usage,
)
from app.modules.ai.errors import (
    AllProvidersFailed,
    DeadlineExceeded,
    FailureKind,
    ProviderError,
    UpstreamRejected,
)
from app.modules.ai.pricing import PriceTable
from app.modules.ai.resilience import GuardedProvider, ProviderSkipped
from app.modules.ai.resilience.guard import ProviderGuards
from app.modules.ai.routing import Router

# When a provider failed with no hint of when it recovers, callers may come back after this.
DEFAULT_RETRY_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class ProviderVerdict:
    """Why one provider gave no answer, in words safe to show the caller."""

    provider: ProviderName
    reason: str
    retry_after_s: float | None


class UnifiedAIService:
    def __init__(
        self,
        settings: Settings,
        guards: ProviderGuards,
        router: Router,
        prices: PriceTable,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._guards = guards
        self._router = router
        self._prices = prices
        self._clock = clock

    @property
    def guards(self) -> Mapping[ProviderName, GuardedProvider]:
        return self._guards

    async def complete(
        self, request: CompletionRequest, *, deadline_s: float | None = None
    ) -> AIResponse:
        started = self._clock.monotonic()
        limit = self._settings.ai_request_deadline_s
        deadline = started + (min(deadline_s, limit) if deadline_s else limit)
        attempts: list[Attempt] = []
        verdicts: list[ProviderVerdict] = []
        for route in self._router.plan(request.model, request.strategy):
            guard = self._guards.get(route.provider)
            if guard is None:
                attempts.append(
                    Attempt(route.provider, None, AttemptOutcome.SKIPPED, "not_configured")
                )
                verdicts.append(ProviderVerdict(route.provider, "not configured", None))
                continue
            verdict = await self._try_provider(guard, route.models, request, deadline, attempts)
            if isinstance(verdict, AIResponse):
                return self._finish(verdict, started, attempts)
            verdicts.append(verdict)
            if self._clock.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"no provider answered within {deadline - started:.1f}s",
                    extra={"providers": _reasons(verdicts), "attempts": _attempts(attempts)},
                )
        waits = [v.retry_after_s for v in verdicts if v.retry_after_s is not None]
        raise AllProvidersFailed(
            "no provider could answer: "
            + "; ".join(f"{v.provider.value}: {v.reason}" for v in verdicts),
            retry_after_s=min(waits) if waits else DEFAULT_RETRY_AFTER_S,
            extra={"providers": _reasons(verdicts), "attempts": _attempts(attempts)},
        )

    async def _try_provider(
        self,
        guard: GuardedProvider,
        models: tuple[str, ...],
        request: CompletionRequest,
        deadline: float,
        attempts: list[Attempt],
    ) -> AIResponse | ProviderVerdict:
        """Walk one provider's model chain: rate limits and missing models move to the next
        model, faults of the provider itself move on to the next provider."""
        verdict = ProviderVerdict(guard.name, "no model tried", None)
        for model in models:
            try:
                reply = await guard.complete(request, model, deadline, attempts)
            except ProviderSkipped as skip:
                attempts.append(Attempt(guard.name, model, AttemptOutcome.SKIPPED, skip.reason))
                return ProviderVerdict(
                    guard.name, skip.reason.replace("_", " "), skip.retry_after_s
                )
            except ProviderError as error:
                if error.kind is FailureKind.BAD_REQUEST:
                    raise UpstreamRejected(
                        f"{guard.name.value} rejected the request as invalid"
                        + (f" ({error.code})" if error.code else "")
                        + "; check the messages, max_tokens and model",
                        extra={"attempts": _attempts(attempts)},
                    ) from error
                verdict = ProviderVerdict(
                    guard.name,
                    f"{error.kind.value} on {model}",
                    _retry_hint(guard, error),
                )
                if error.kind in (FailureKind.RATE_LIMITED, FailureKind.NOT_FOUND):
                    continue
                return verdict
            usage = Usage(reply.prompt_tokens, reply.completion_tokens)
            return AIResponse(
                content=reply.content,
                provider=guard.name,
                model=reply.model,
                usage=usage,
                cost_usd=self._prices.cost(
                    guard.name, model, reply.prompt_tokens, reply.completion_tokens
                ),
                latency_ms=0.0,
                finish_reason=reply.finish_reason,
            )
        return verdict

    def _finish(self, response: AIResponse, started: float, attempts: list[Attempt]) -> AIResponse:
        latency_ms = (self._clock.monotonic() - started) * 1000
        return replace(response, latency_ms=latency_ms, attempts=tuple(attempts))


def _retry_hint(guard: GuardedProvider, error: ProviderError) -> float | None:
    if error.kind is FailureKind.RATE_LIMITED:
        return guard.keys.wake_in()
    if error.kind is FailureKind.AUTH:
        return None if guard.keys.usable() == 0 else DEFAULT_RETRY_AFTER_S
    return error.retry_after_s or DEFAULT_RETRY_AFTER_S


def _reasons(verdicts: list[ProviderVerdict]) -> list[dict[str, object]]:
    return [
        {"provider": v.provider.value, "reason": v.reason, "retry_after_s": v.retry_after_s}
        for v in verdicts
    ]


def _attempts(attempts: list[Attempt]) -> list[dict[str, object]]:
    return [
        {
            "provider": a.provider.value,
            "model": a.model,
            "outcome": a.outcome.value,
            "error_type": a.error_type,
            "latency_ms": round(a.latency_ms, 2),
        }
        for a in attempts
    ]
