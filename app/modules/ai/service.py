"""UnifiedAIService: one call in, the cheapest working provider's answer out."""

from __future__ import annotations

from dataclasses import dataclass, replace

from app.core.clock import Clock
from app.core.settings import ProviderName, Settings
from app.modules.ai.domain import (
    AIResponse,
    Attempt,
    AttemptOutcome,
    CallContext,
    CompletionRequest,
    Usage,
)
from app.modules.ai.errors import (
    AllProvidersFailed,
    DeadlineExceeded,
    FailureKind,
    ModelNotFound,
    ProviderError,
    UpstreamRejected,
)
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.pricing import PriceTable
from app.modules.ai.resilience import GuardedProvider, ProviderSkipped
from app.modules.ai.resilience.guard import ProviderGuards
from app.modules.ai.routing import ALIASES, Route, Router

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
        metrics: AIMetrics,
    ) -> None:
        self._settings = settings
        self._guards = guards
        self._router = router
        self._prices = prices
        self._clock = clock
        self._metrics = metrics

    @property
    def guards(self) -> ProviderGuards:
        return self._guards

    async def complete(
        self,
        request: CompletionRequest,
        *,
        context: CallContext | None = None,
        deadline_s: float | None = None,
    ) -> AIResponse:
        """The answer of the first provider that can give one, with the route it took.

        Raises UnknownModel, UpstreamRejected, ModelNotFound, AllProvidersFailed or
        DeadlineExceeded (all GatewayError, mapped to problem+json)."""
        started = self._clock.monotonic()
        limit = self._settings.ai_request_deadline_s
        deadline = started + (min(deadline_s, limit) if deadline_s else limit)
        plan = self._router.plan(request.model, request.strategy)
        attempts: list[Attempt] = []
        try:
            response = await self._walk(plan, request, started, deadline, attempts)
        finally:
            upstream_ms = sum(a.latency_ms for a in attempts)
            total_ms = (self._clock.monotonic() - started) * 1000
            self._metrics.overhead.record(max(0.0, total_ms - upstream_ms) / 1000)
        return replace(response, latency_ms=total_ms, attempts=tuple(attempts))

    async def _walk(
        self,
        plan: list[Route],
        request: CompletionRequest,
        started: float,
        deadline: float,
        attempts: list[Attempt],
    ) -> AIResponse:
        verdicts: list[ProviderVerdict] = []
        failed_from: ProviderName | None = None
        for index, route in enumerate(plan):
            guard = self._guards.get(route.provider)
            if guard is None:
                attempts.append(
                    Attempt(route.provider, None, AttemptOutcome.SKIPPED, "not_configured")
                )
                verdicts.append(ProviderVerdict(route.provider, "not configured", None))
                continue
            if failed_from is not None:
                self._metrics.fallbacks.add(
                    1, {"from_provider": failed_from.value, "to_provider": route.provider.value}
                )
            # Retry a provider only when no later provider could take the call instead.
            may_retry = not any(
                (g := self._guards.get(r.provider)) is not None and g.available()
                for r in plan[index + 1 :]
            )
            outcome = await self._try_provider(
                guard, route.models, request, deadline, attempts, may_retry
            )
            if isinstance(outcome, AIResponse):
                return outcome
            verdicts.append(outcome)
            failed_from = route.provider
            if self._clock.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"no provider answered within {deadline - started:.1f}s",
                    extra={"providers": _reasons(verdicts), "attempts": _attempts(attempts)},
                )
        pinned = request.model not in ALIASES
        if pinned and attempts and all(a.error_type == FailureKind.NOT_FOUND for a in attempts):
            raise ModelNotFound(
                f"{plan[0].provider.value} has no model {plan[0].models[0]!r}; use an alias "
                f"({', '.join(ALIASES)}) or a model the provider serves",
                extra={"attempts": _attempts(attempts)},
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
        may_retry: bool,
    ) -> AIResponse | ProviderVerdict:
        """Walk one provider's model chain: rate limits and missing models move to the next
        model, faults of the provider itself move on to the next provider."""
        verdict = ProviderVerdict(guard.name, "no model tried", None)
        for model in models:
            try:
                reply = await guard.complete(
                    request, model, deadline, attempts, may_retry=may_retry
                )
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
                    guard.name, f"{error.kind.value} on {model}", _retry_hint(guard, error)
                )
                if error.kind in (FailureKind.RATE_LIMITED, FailureKind.NOT_FOUND):
                    continue
                return verdict
            cost = self._prices.cost(
                guard.name, model, reply.prompt_tokens, reply.completion_tokens
            )
            self._metrics.usage(
                guard.name.value, model, reply.prompt_tokens, reply.completion_tokens, cost
            )
            return AIResponse(
                content=reply.content,
                provider=guard.name,
                model=reply.model,
                usage=Usage(reply.prompt_tokens, reply.completion_tokens),
                cost_usd=cost,
                latency_ms=0.0,
                finish_reason=reply.finish_reason,
            )
        return verdict


def _retry_hint(guard: GuardedProvider, error: ProviderError) -> float | None:
    """When this provider may be worth trying again."""
    if error.kind is FailureKind.AUTH and guard.keys.usable() == 0:
        return None
    blocked = guard.retry_after_s()
    if blocked is not None:
        return blocked
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
