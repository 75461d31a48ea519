"""UnifiedAIService: one call in, the cheapest working provider's answer out.

cache (exact match, single-flight) -> route (strategy) -> per model: budget reserve ->
guarded provider call -> budget settle -> ledger rows for every upstream attempt

A try that was sent but gave no answer may still be billed: a provider bills the prompt it
read even when the answer never arrives (our timeout) or is no longer awaited (the caller
went away). Such a try (BILLED_WITHOUT_ANSWER) is booked at its estimated input cost (the
prompt's estimated tokens at the model's input price), not at $0: in the budget (the
reservation settles to it), in the cost metric, and in its ledger row, flagged
`cost_estimated`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

from app.core.clock import Clock
from app.core.ids import random_hex
from app.core.request_id import current_request_id, note_answer
from app.core.settings import ModelPrice, ProviderName, Settings
from app.core.tracing import add_event
from app.modules.ai.budget import MONTH, Blocked, BudgetStore, Reservation
from app.modules.ai.cache import ResponseCache
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
    BudgetExceeded,
    DeadlineExceeded,
    FailureKind,
    ModelNotFound,
    ProviderError,
    UnpricedModel,
    UpstreamRejected,
)
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.overhead import add_upstream_wait
from app.modules.ai.pricing import PRICE_SETTINGS, TOKENS_PER_PRICE_UNIT, PriceTable
from app.modules.ai.providers.tokens import estimate_tokens
from app.modules.ai.resilience import GuardedProvider, ProviderSkipped
from app.modules.ai.resilience.guard import MayRetry, ProviderGuards
from app.modules.ai.routing import ALIASES, Route, Router
from app.modules.ai.streaming import STREAM_CANCELLED, AIStream, StreamResult, estimate_chars
from app.modules.ai.usage import UsageLedger, UsageRow

# When a provider failed with no hint of when it recovers, callers may come back after this.
DEFAULT_RETRY_AFTER_S = 1.0
# Tokens the chat templates add per message, on top of the text (upper bound).
MESSAGE_OVERHEAD_TOKENS = 8
BUDGET_SKIP = "budget_exceeded"
# A paid provider's model the price table does not price (AI_ALLOW_UNPRICED_MODELS=false).
UNPRICED_SKIP = "unpriced_model"
# The attempt row of a call the caller stopped awaiting (cancelled) after it was sent.
CANCELLED = STREAM_CANCELLED
# Failed tries that may be billed without an answer: the request was sent and the provider
# may have read (and billed) the prompt: cut short by the provider's timeout or by the
# caller's own deadline (a call still waiting for a connection of our own pool is skipped by
# the guard instead, never sent), or no longer awaited by the caller.
BILLED_WITHOUT_ANSWER = frozenset(
    {FailureKind.TIMEOUT.value, FailureKind.CALLER_DEADLINE.value, CANCELLED}
)


@dataclass(frozen=True, slots=True)
class ProviderVerdict:
    """Why one provider gave no answer, in words safe to show the caller."""

    provider: ProviderName
    reason: str
    retry_after_s: float | None
    budget_blocked: bool = False
    # Blocked only by money held by calls still in flight (see budget.Blocked.held).
    budget_held: bool = False
    # "daily" or "monthly": which of a provider's budgets blocked it.
    budget_span: str = "daily"
    unpriced: bool = False


R = TypeVar("R")
# How one model is asked, for a whole answer or for a stream: (guard, model, may_retry,
# reservation) -> the answer; the request and its attempts are bound in beforehand.
Way = Callable[[GuardedProvider, str, MayRetry, Reservation], Awaitable[R]]


@dataclass(frozen=True, slots=True)
class _Call:
    """One request on its way through the providers."""

    request: CompletionRequest
    context: CallContext
    request_id: str
    started: float
    deadline: float
    # Indexes into the call's attempts whose cost is our estimate, not the upstream's count.
    estimated: set[int] = field(default_factory=set)


class UnifiedAIService:
    def __init__(
        self,
        settings: Settings,
        guards: ProviderGuards,
        router: Router,
        prices: PriceTable,
        clock: Clock,
        metrics: AIMetrics,
        budget: BudgetStore,
        cache: ResponseCache,
        ledger: UsageLedger,
    ) -> None:
        self._settings = settings
        self._guards = guards
        self._router = router
        self._prices = prices
        self._clock = clock
        self._metrics = metrics
        self._budget = budget
        self._cache = cache
        self._ledger = ledger

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

        Raises UnknownModel, UpstreamRejected, ModelNotFound, BudgetExceeded,
        AllProvidersFailed or DeadlineExceeded (all GatewayError, mapped to problem+json)."""
        call = self._new_call(request, context, deadline_s)
        plan = self._router.plan(request.model, request.strategy)  # 400 before anything else
        response, hit = await self._cache.get_or_compute(
            request,
            lambda: self._call(plan, call),
            plan=plan,
            caller=call.context.caller,
            wait_s=call.deadline - self._clock.monotonic(),
        )
        add_event("gateway.cache", {"gateway.cache.hit": hit})
        _note(response, cached=hit)
        if not hit:
            return response
        latency_ms = (self._clock.monotonic() - call.started) * 1000
        self._ledger.record([self._cache_row(call, response, latency_ms)])
        return replace(response, cached=True, cost_usd=0.0, latency_ms=latency_ms, attempts=())

    async def stream(
        self,
        request: CompletionRequest,
        *,
        context: CallContext | None = None,
        deadline_s: float | None = None,
    ) -> AIStream:
        """The answer of the first provider that can give one, as a stream of text.

        Returned once the first text is in hand, so every failure up to then fails over (and
        raises) exactly as in `complete`. Streams are not cached. The attempt, budget and ledger
        are settled when the caller's iteration of `texts()` ends, however it ends."""
        call = self._new_call(request, context, deadline_s)
        plan = self._router.plan(request.model, request.strategy)
        attempts: list[Attempt] = []
        try:
            return await self._walk(
                plan, call, attempts, partial(self._open_stream, call, attempts)
            )
        except BaseException:
            self._record_call(call, attempts)
            raise

    def _new_call(
        self, request: CompletionRequest, context: CallContext | None, deadline_s: float | None
    ) -> _Call:
        started = self._clock.monotonic()
        limit = self._settings.ai_request_deadline_s
        context = context or CallContext()
        return _Call(
            request=request,
            context=context,
            # The HTTP request's id (X-Request-ID) when there is one, so the ledger rows match
            # what the caller was told.
            request_id=context.request_id or current_request_id() or random_hex(),
            started=started,
            deadline=started + (min(deadline_s, limit) if deadline_s else limit),
        )

    def _record_call(self, call: _Call, attempts: list[Attempt]) -> None:
        """Ledger rows for every attempt, and their time as the request's upstream wait."""
        add_upstream_wait(sum(a.latency_ms for a in attempts) / 1000)
        self._ledger.record(self._rows(call, attempts))

    async def _call(self, plan: list[Route], call: _Call) -> AIResponse:
        attempts: list[Attempt] = []
        try:
            response = await self._walk(
                plan, call, attempts, partial(self._complete, call, attempts)
            )
        finally:
            total_ms = (self._clock.monotonic() - call.started) * 1000
            self._record_call(call, attempts)
        return replace(response, latency_ms=total_ms, attempts=tuple(attempts))

    async def _walk(
        self, plan: list[Route], call: _Call, attempts: list[Attempt], way: Way[R]
    ) -> R:
        verdicts: list[ProviderVerdict] = []
        failed_from: ProviderName | None = None
        for index, route in enumerate(plan):
            guard = self._guards.get(route.provider)
            if guard is None:
                attempts.append(
                    Attempt(route.provider, None, AttemptOutcome.SKIPPED, "not_configured")
                )
                continue
            if failed_from is not None:
                self._metrics.fallbacks.add(
                    1, {"from_provider": failed_from.value, "to_provider": route.provider.value}
                )
            may_retry = partial(self._none_available, plan[index + 1 :])
            outcome = await self._try_provider(guard, route.models, call, attempts, may_retry, way)
            if not isinstance(outcome, ProviderVerdict):
                return outcome
            verdicts.append(outcome)
            failed_from = route.provider
            if self._clock.monotonic() >= call.deadline:
                raise DeadlineExceeded(
                    f"no provider answered within {call.deadline - call.started:.1f}s",
                    extra={"providers": _reasons(verdicts), "attempts": _attempts(attempts)},
                )
        raise self._no_answer(plan, call, verdicts, attempts)

    def _none_available(self, routes: list[Route]) -> bool:
        """Retry a provider only when no later provider could take the call instead; asked
        only once a retryable failure has happened, never on the way to a first answer."""
        return not any(
            (g := self._guards.get(r.provider)) is not None and g.available() for r in routes
        )

    def _no_answer(
        self,
        plan: list[Route],
        call: _Call,
        verdicts: list[ProviderVerdict],
        attempts: list[Attempt],
    ) -> Exception:
        extra = {"providers": _reasons(verdicts), "attempts": _attempts(attempts)}
        pinned = call.request.model not in ALIASES
        if verdicts and all(v.unpriced for v in verdicts):
            return self._unpriced(plan, call, pinned, attempts)
        if pinned and attempts and all(a.error_type == FailureKind.NOT_FOUND for a in attempts):
            return ModelNotFound(
                f"{plan[0].provider.value} has no model {plan[0].models[0]!r}; use an alias "
                f"({', '.join(ALIASES)}) or a model the provider serves",
                extra={"attempts": _attempts(attempts)},
            )
        if verdicts and all(v.budget_blocked for v in verdicts):
            return self._over_budget(verdicts, extra)
        waits = [v.retry_after_s for v in verdicts if v.retry_after_s is not None]
        detail = "; ".join(f"{v.provider.value}: {v.reason}" for v in verdicts)
        return AllProvidersFailed(
            f"no provider could answer: {detail or 'none is configured'}",
            retry_after_s=min(waits) if waits else DEFAULT_RETRY_AFTER_S,
            extra=extra,
        )

    def _over_budget(
        self, verdicts: list[ProviderVerdict], extra: dict[str, Any]
    ) -> BudgetExceeded:
        """Every provider is blocked by a budget. Retry-After is the soonest a provider may
        pass again: the period's reset where money is truly spent (midnight, or the first of
        the next month for a monthly cap), a few seconds where only reservations of calls
        still in flight are in the way (budget.HELD_RETRY_AFTER_S)."""
        reasons = "; ".join(f"{v.provider.value}: {v.reason}" for v in verdicts)
        spans = sorted({v.budget_span for v in verdicts})  # a monthly cap says so
        span = " or ".join(spans) if spans else "daily"
        if all(v.budget_held for v in verdicts):
            lead = (
                f"every provider that could answer has its {span} budget held by calls still "
                "in flight (what is spent leaves room for this request; retry shortly)"
            )
        elif any(v.budget_held for v in verdicts):
            lead = (
                f"every provider that could answer is over its {span} budget or held by calls "
                "still in flight"
            )
        else:
            lead = f"every provider that could answer is over its {span} budget"
        waits = [v.retry_after_s for v in verdicts if v.retry_after_s is not None]
        return BudgetExceeded(
            f"{lead}: {reasons}",
            retry_after_s=min(waits) if waits else self._budget.seconds_until_reset(),
            extra=extra,
        )

    def _unpriced(
        self, plan: list[Route], call: _Call, pinned: bool, attempts: list[Attempt]
    ) -> UnpricedModel:
        """Every model the request could use is unpriced: refused, nothing was sent."""
        if pinned:
            refusal = self._prices.refusal(plan[0].provider, plan[0].models[0])
        else:
            refusal = UnpricedModel(
                f"no model of {call.request.model!r} has a price, and the gateway never books a "
                f"paid model as free: add their prices to the price table ({PRICE_SETTINGS}), "
                "or set AI_ALLOW_UNPRICED_MODELS=true"
            )
        refusal.extra = {"attempts": _attempts(attempts)}
        return refusal

    async def _try_provider(
        self,
        guard: GuardedProvider,
        models: tuple[str, ...],
        call: _Call,
        attempts: list[Attempt],
        may_retry: MayRetry,
        way: Way[R],
    ) -> R | ProviderVerdict:
        """Walk one provider's model chain: rate limits, missing models and budgets move to the
        next model, faults of the provider itself move on to the next provider."""
        verdict = ProviderVerdict(guard.name, "no model tried", None)
        for model in models:
            quote = self._prices.quote(guard.name, model)
            if quote is None:  # never free by default: refused before any upstream call
                attempts.append(Attempt(guard.name, model, AttemptOutcome.SKIPPED, UNPRICED_SKIP))
                verdict = ProviderVerdict(
                    guard.name, f"no price for {model} ({PRICE_SETTINGS})", None, unpriced=True
                )
                continue
            worst_case = self._worst_case_usd(call.request, quote.price)
            reservation = await self._budget.acquire(
                guard.name,
                call.context.caller,
                worst_case,
                lease_s=call.deadline - self._clock.monotonic(),
            )
            add_event(
                "gateway.budget",
                {
                    "gen_ai.provider.name": guard.name.value,
                    "gen_ai.request.model": model,
                    "gateway.budget.reserved_usd": worst_case,
                    "gateway.budget.blocked": isinstance(reservation, Blocked),
                },
            )
            if isinstance(reservation, Blocked):
                attempts.append(Attempt(guard.name, model, AttemptOutcome.SKIPPED, BUDGET_SKIP))
                span = "monthly" if reservation.period == MONTH else "daily"
                verdict = ProviderVerdict(
                    guard.name,
                    f"{reservation.budget} {span} budget held by calls in flight"
                    if reservation.held
                    else f"{reservation.budget} {span} budget reached",
                    reservation.retry_after_s,
                    budget_blocked=True,
                    budget_held=reservation.held,
                    budget_span=span,
                )
                continue
            try:
                return await way(guard, model, may_retry, reservation)
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
                        upstream_code=error.code,
                        extra={"attempts": _attempts(attempts)},
                    ) from error
                if error.kind is FailureKind.CALLER_DEADLINE:  # no time left for anyone
                    raise DeadlineExceeded(
                        f"the request's deadline ({call.deadline - call.started:.3f}s) passed "
                        f"while {guard.name.value} was answering",
                        extra={"attempts": _attempts(attempts)},
                    ) from error
                verdict = ProviderVerdict(
                    guard.name, f"{error.kind.value} on {model}", _retry_hint(guard, error)
                )
                if error.kind in (FailureKind.RATE_LIMITED, FailureKind.NOT_FOUND):
                    continue
                return verdict
        return verdict

    async def _complete(
        self,
        call: _Call,
        attempts: list[Attempt],
        guard: GuardedProvider,
        model: str,
        may_retry: MayRetry,
        reservation: Reservation,
    ) -> AIResponse:
        """One model's whole answer; the reservation is settled whatever happens: to the
        answer's cost plus the estimated cost of every try billed without an answer."""
        first, started = len(attempts), self._clock.monotonic()
        cost = unanswered = 0.0
        try:
            reply = await guard.complete(
                call.request, model, call.deadline, attempts, may_retry=may_retry
            )
            cost = self._prices.cost(
                guard.name, model, reply.prompt_tokens, reply.completion_tokens
            )
        except asyncio.CancelledError:
            self._cancelled(attempts, first, started, guard, model)
            raise
        finally:
            unanswered = self._book_unanswered(call, attempts, first, guard, model)
            self._budget.settle(reservation, cost + unanswered)
        attempts[-1] = replace(attempts[-1], cost_usd=cost)
        self._metrics.usage(
            guard.name.value, model, reply.prompt_tokens, reply.completion_tokens, cost
        )
        return AIResponse(
            content=reply.content,
            provider=guard.name,
            model=reply.model,
            usage=Usage(reply.prompt_tokens, reply.completion_tokens),
            # What this request was booked at: the answer and any earlier try of this model
            # billed without an answer (the same sum the budget and the ledger hold).
            cost_usd=cost + unanswered,
            latency_ms=0.0,
            finish_reason=reply.finish_reason,
        )

    def _cancelled(
        self,
        attempts: list[Attempt],
        first: int,
        started: float,
        guard: GuardedProvider,
        model: str,
    ) -> None:
        """The caller stopped awaiting this model's answer: the try in flight becomes an
        attempt (the guard books no verdict and no attempt for a cancellation), so it is
        booked and has its ledger row. Cancelled in the guard's pause between two tries, no
        try was in flight; that cannot be told from here and is booked too (over, never
        under)."""
        if any(a.error_type == CANCELLED for a in attempts[first:]):
            return  # the guard booked it itself
        earlier = sum(a.latency_ms for a in attempts[first:]) / 1000
        elapsed = max(0.0, self._clock.monotonic() - started - earlier)
        attempts.append(
            Attempt(
                guard.name,
                model,
                AttemptOutcome.ERROR,
                CANCELLED,
                latency_ms=elapsed * 1000,
                endpoint=guard.adapter.endpoint,
                error_message="cancelled: the caller went away after the request was sent",
            )
        )

    def _book_unanswered(
        self,
        call: _Call,
        attempts: list[Attempt],
        first: int,
        guard: GuardedProvider,
        model: str,
    ) -> float:
        """Cost every try of `model` since `first` that was sent and may be billed without
        an answer (BILLED_WITHOUT_ANSWER) at its estimated input cost; the USD booked."""
        quote = self._prices.quote(guard.name, model)
        tokens = estimate_tokens(call.request.messages)
        each = quote.cost(tokens, 0) if quote is not None else 0.0
        if each <= 0:
            return 0.0  # a free model: nothing to estimate
        total = 0.0
        for index in range(first, len(attempts)):
            attempt = attempts[index]
            if (
                attempt.outcome is AttemptOutcome.ERROR
                and attempt.error_type in BILLED_WITHOUT_ANSWER
                and index not in call.estimated
            ):
                attempts[index] = replace(attempt, prompt_tokens=tokens, cost_usd=each)
                call.estimated.add(index)
                self._metrics.usage(guard.name.value, model, tokens, 0, each)
                total += each
        return total

    async def _open_stream(
        self,
        call: _Call,
        attempts: list[Attempt],
        guard: GuardedProvider,
        model: str,
        may_retry: MayRetry,
        reservation: Reservation,
    ) -> AIStream:
        """One model's answer, opened; the reservation stays held until the stream ends."""
        first = len(attempts)
        opened_at = self._clock.monotonic()
        try:
            stream = await guard.open_stream(
                call.request, model, call.deadline, attempts, may_retry=may_retry
            )
        except BaseException as error:
            if isinstance(error, asyncio.CancelledError):
                self._cancelled(attempts, first, opened_at, guard, model)
            unanswered = self._book_unanswered(call, attempts, first, guard, model)
            self._budget.settle(reservation, unanswered)
            raise
        # Tries that timed out before this one opened: the stream's reservation covers them.
        unanswered = self._book_unanswered(call, attempts, first, guard, model)

        def end(result: StreamResult) -> tuple[int, int]:
            return self._end_stream(guard, model, call, attempts, reservation, result, unanswered)

        return AIStream(stream, guard.name, call.deadline, self._clock, opened_at, end)

    def _end_stream(
        self,
        guard: GuardedProvider,
        model: str,
        call: _Call,
        attempts: list[Attempt],
        reservation: Reservation,
        result: StreamResult,
        unanswered: float = 0.0,
    ) -> tuple[int, int]:
        """Book a finished stream: the upstream's own token counts when it sent them (a
        stream cut short is billed for what was generated, estimated from the text when the
        upstream sent no counts: the row is flagged `cost_estimated`), the cost, the attempt
        row. `unanswered`: what tries of this model billed without an answer before the
        stream opened were booked at; the reservation settles to both."""
        prompt, completion = result.usage or (
            estimate_tokens(call.request.messages),
            estimate_chars(result.chars),
        )
        cost = self._prices.cost(guard.name, model, prompt, completion)
        self._budget.settle(reservation, cost + unanswered)
        if result.usage is None and cost > 0:
            call.estimated.add(len(attempts))  # the attempt appended below
        error = result.error
        guard.finish_stream(model, result.elapsed_s, error, cancelled=result.cancelled)
        self._metrics.usage(guard.name.value, model, prompt, completion, cost)
        note_answer(
            provider=guard.name.value,
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=cost + unanswered,
            cached=False,
        )
        kind = error.kind.value if error else (STREAM_CANCELLED if result.cancelled else None)
        attempts.append(
            Attempt(
                guard.name,
                model,
                AttemptOutcome.ERROR if kind else AttemptOutcome.SUCCESS,
                kind,
                latency_ms=result.elapsed_s * 1000,
                status_code=200,
                endpoint=guard.adapter.endpoint,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=cost,
                error_message=error.message if error else None,
            )
        )
        self._record_call(call, attempts)
        return prompt, completion

    def _worst_case_usd(self, request: CompletionRequest, price: ModelPrice) -> float:
        """An upper bound of the call's cost: every UTF-8 byte of the prompt as a token (no
        BPE token is shorter than a byte) and the whole max_tokens as output. Only a price
        the table sets to 0 makes it 0; an unpriced model never gets here at 0."""
        if price.input == 0 and price.output == 0:
            return 0.0
        prompt = sum(len(m.content.encode()) + MESSAGE_OVERHEAD_TOKENS for m in request.messages)
        completion = request.max_tokens or self._settings.ai_max_tokens_limit
        return (prompt * price.input + completion * price.output) / TOKENS_PER_PRICE_UNIT

    def _rows(self, call: _Call, attempts: list[Attempt]) -> list[UsageRow]:
        now = self._clock.now()
        return [
            UsageRow(
                request_id=call.request_id,
                user_id=call.context.caller,
                service_name=call.context.service_name,
                intent=call.request.intent.value if call.request.intent else None,
                provider=a.provider.value,
                model=a.model,
                endpoint=a.endpoint,
                status_code=a.status_code,
                outcome="success" if a.outcome is AttemptOutcome.SUCCESS else "error",
                error_type=a.error_type,
                prompt_tokens=a.prompt_tokens,
                completion_tokens=a.completion_tokens,
                cost_usd=a.cost_usd,
                duration_ms=a.latency_ms,
                error_message=a.error_message,
                price_estimated=a.model is not None and self._estimated(a.provider, a.model),
                cost_estimated=number - 1 in call.estimated,
                metadata={"attempt": number, "strategy": _strategy(call.request)},
                created_at=now,
            )
            for number, a in enumerate(attempts, start=1)
            if a.outcome is not AttemptOutcome.SKIPPED
        ]

    def _estimated(self, provider: ProviderName, model: str) -> bool:
        """The model has no price of its own and was booked at its provider's worst price."""
        quote = self._prices.quote(provider, model)
        return quote is not None and quote.estimated

    def _cache_row(self, call: _Call, response: AIResponse, latency_ms: float) -> UsageRow:
        return UsageRow(
            request_id=call.request_id,
            user_id=call.context.caller,
            service_name=call.context.service_name,
            intent=call.request.intent.value if call.request.intent else None,
            provider=response.provider.value,
            model=response.model,
            endpoint="cache",
            status_code=200,
            outcome="cache_hit",
            cached=True,
            duration_ms=latency_ms,
            metadata={"strategy": _strategy(call.request)},
            created_at=self._clock.now(),
        )


def _note(response: AIResponse, *, cached: bool) -> None:
    """The answer, for the request's access line (app.core.request_id)."""
    note_answer(
        provider=response.provider.value,
        model=response.model,
        prompt_tokens=response.usage.prompt_tokens,
        completion_tokens=response.usage.completion_tokens,
        cost_usd=0.0 if cached else response.cost_usd,
        cached=cached,
    )


def _strategy(request: CompletionRequest) -> str | None:
    return request.strategy.value if request.strategy else None


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
