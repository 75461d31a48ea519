"""HTTP surface of the AI module: the gateway API, the OpenAI-compatible API and readiness."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import msgspec
from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import Controller, Response, get, post
from litestar.exceptions import ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from app.core.apidocs import event_stream_operation
from app.core.auth import Caller
from app.core.errors import GatewayError
from app.core.ids import random_hex
from app.core.problems import (
    openai_error_body,
    openai_error_response,
    openai_error_responses,
    problem_responses,
)
from app.core.settings import Settings
from app.core.version import build_info
from app.modules.ai.budget import BudgetStore
from app.modules.ai.domain import AIResponse, CallContext
from app.modules.ai.errors import ModelNotFound, ProviderError
from app.modules.ai.health import HealthService, HealthStatus
from app.modules.ai.models_list import ListedModel, ModelCatalog
from app.modules.ai.requests import chat_request, completion_request
from app.modules.ai.schemas import (
    CHUNK_STREAM_DESCRIPTION,
    CHUNK_STREAM_EXAMPLE,
    AttemptOut,
    BudgetOut,
    BudgetsOut,
    CallerUsageOut,
    ChatCompletionBody,
    ChatCompletionOut,
    ChatMessageOut,
    ChoiceOut,
    CompletionBody,
    CompletionOut,
    HealthOut,
    KeyOut,
    LedgerOut,
    LiveOut,
    ModelListOut,
    ModelOut,
    ProbeOut,
    ProviderHealthOut,
    ProvidersHealthOut,
    UsageLineOut,
    UsageOut,
)
from app.modules.ai.service import UnifiedAIService
from app.modules.ai.streaming import AIStream
from app.modules.ai.usage import UsageLedger


def _usage(response: AIResponse) -> UsageOut:
    return UsageOut(
        prompt_tokens=response.usage.prompt_tokens,
        completion_tokens=response.usage.completion_tokens,
        total_tokens=response.usage.total_tokens,
    )


class AIController(Controller):
    path = "/v1"
    tags = ("ai",)
    security = ({"bearer": []},)

    @post(
        "/ai/completions",
        status_code=HTTP_200_OK,
        responses=problem_responses(400, 401, 404, 429, 503, 504),
    )
    @inject
    async def complete(
        self,
        data: JSONBody[CompletionBody],
        service: FromDishka[UnifiedAIService],
        settings: FromDishka[Settings],
        caller: FromDishka[Caller],
    ) -> CompletionOut:
        """Answer a prompt from the cheapest working provider, with the route it took."""
        response = await service.complete(
            completion_request(data, settings),
            context=CallContext(caller=caller.id, service_name="ai-completions"),
            deadline_s=data.timeout_s,
        )
        return CompletionOut(
            content=response.content,
            provider=response.provider.value,
            model=response.model,
            usage=_usage(response),
            cost_usd=response.cost_usd,
            latency_ms=round(response.latency_ms, 3),
            cached=response.cached,
            attempts=[
                AttemptOut(
                    provider=a.provider.value,
                    model=a.model,
                    outcome=a.outcome.value,
                    error_type=a.error_type,
                    latency_ms=round(a.latency_ms, 3),
                )
                for a in response.attempts
            ],
        )

    @post(
        "/chat/completions",
        status_code=HTTP_200_OK,
        responses={
            HTTP_200_OK: ResponseSpec(
                ChatCompletionOut,
                description="The completion; with stream: true, chat.completion.chunk events "
                "as text/event-stream",
                generate_examples=False,  # the models carry real examples
            ),
            **openai_error_responses(400, 401, 404, 429, 503, 504),
        },
        exception_handlers={
            GatewayError: openai_error_response,
            ValidationException: openai_error_response,
        },
        operation_class=event_stream_operation(CHUNK_STREAM_DESCRIPTION, CHUNK_STREAM_EXAMPLE),
    )
    @inject
    async def chat_completions(
        self,
        data: JSONBody[ChatCompletionBody],
        service: FromDishka[UnifiedAIService],
        settings: FromDishka[Settings],
        caller: FromDishka[Caller],
    ) -> Response[ChatCompletionOut] | Stream:
        """OpenAI-compatible Chat Completions. With `stream: true` the answer is passed on as
        Server-Sent Events while the upstream produces it; every failure before its first text
        fails over and is answered like a non-streamed request's."""
        request = chat_request(data, settings)
        context = CallContext(caller=caller.id, service_name="chat-completions")
        if data.stream:
            include_usage = bool(data.stream_options and data.stream_options.include_usage)
            stream = await service.stream(request, context=context)
            return Stream(
                _live_sse(stream, include_usage),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            )
        response = await service.complete(request, context=context)
        completion = ChatCompletionOut(
            id=f"chatcmpl-{random_hex()}",
            created=int(time.time()),
            model=response.model,
            choices=[
                ChoiceOut(
                    index=0,
                    message=ChatMessageOut(content=response.content),
                    finish_reason=response.finish_reason or "stop",
                )
            ],
            usage=_usage(response),
            provider=response.provider.value,
            cost_usd=response.cost_usd,
        )
        # A Response, not the bare model: a handler annotated with a model gets Litestar's JSON
        # media type, which then overrides the Stream's own, and an event stream must say so.
        return Response(completion)

    @get(
        "/models",
        responses=openai_error_responses(401, 429),
        exception_handlers={GatewayError: openai_error_response},
    )
    @inject
    async def models(self, catalog: FromDishka[ModelCatalog]) -> ModelListOut:
        """OpenAI's model list: the aliases (fast, quality) and every provider/model of a
        configured provider the gateway can route, so `client.models.list()` works."""
        return ModelListOut(data=[_model_out(m) for m in catalog.all()])

    @get(
        "/models/{model:path}",
        responses=openai_error_responses(401, 404, 429),
        exception_handlers={GatewayError: openai_error_response},
    )
    @inject
    async def model(self, model: FromPath[str], catalog: FromDishka[ModelCatalog]) -> ModelOut:
        """One listed model (`client.models.retrieve`): an alias, provider/model, or a bare
        model name a configured provider serves; 404 model_not_found otherwise."""
        name = model.lstrip("/")
        found = catalog.find(name)
        if found is None:
            raise ModelNotFound(
                "the gateway routes no model by this name: GET /v1/models lists them"
            )
        return _model_out(found)

    @get("/usage", responses=problem_responses(401, 429, 503))
    @inject
    async def usage(
        self, ledger: FromDishka[UsageLedger], caller: FromDishka[Caller]
    ) -> CallerUsageOut:
        """The calling caller's usage today and this month (in BUDGET_TIMEZONE), by provider
        and model: the ledger's database plus its rows not yet written. 503 with Retry-After
        while the database cannot be read."""
        lines = await ledger.usage_today(caller.id)
        month = await ledger.usage_month(caller.id)
        return CallerUsageOut(
            caller=caller.id,
            day=ledger.today().isoformat(),
            lines=[UsageLineOut(**line) for line in lines],
            cost_usd=round(sum(line["cost_usd"] for line in lines), 9),
            month=ledger.this_month(),
            month_lines=[UsageLineOut(**line) for line in month],
            month_cost_usd=round(sum(line["cost_usd"] for line in month), 9),
        )

    @get("/budgets", responses=problem_responses(401, 429))
    @inject
    async def budgets(
        self, budget: FromDishka[BudgetStore], caller: FromDishka[Caller]
    ) -> BudgetsOut:
        """The budgets that apply to the caller (each provider's, the total, its own), daily
        and monthly (`period`): limit, spent, held by calls in flight, remaining, reset. With
        several replicas on Redis, the numbers of all of them. Admin callers
        (GATEWAY_ADMIN_CALLERS) see every caller's budget."""
        lines = await budget.lines(caller=None if caller.admin else caller.id)
        return BudgetsOut(budgets=[BudgetOut(**line) for line in lines], store=budget.state)


async def _live_sse(stream: AIStream, include_usage: bool) -> AsyncIterator[bytes]:
    """chat.completion.chunk events as OpenAI sends them: the role with the first text, one
    event per upstream piece, the finish reason, the usage if asked, then [DONE]. A fault
    after the first text ends the stream with an error event, which the SDKs raise."""
    base = {
        "id": f"chatcmpl-{random_hex()}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": stream.model,
        "provider": stream.provider.value,
    }
    delta: dict[str, str] = {"role": "assistant"}
    async with contextlib.aclosing(stream.texts()) as texts:
        try:
            async for text in texts:
                yield _sse(base | _choice(delta | {"content": text}, None))
                delta = {}
        except ProviderError as error:
            yield _sse({"error": _stream_error(error)})
            return
    yield _sse(base | _choice({}, stream.finish_reason or "stop"))
    if include_usage:
        prompt, completion = stream.booked_usage
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        yield _sse(base | {"choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def _model_out(model: ListedModel) -> ModelOut:
    return ModelOut(id=model.id, created=model.created, owned_by=model.owned_by)


def _choice(delta: dict[str, str], finish: str | None) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _sse(event: dict[str, object]) -> bytes:
    return b"data: " + msgspec.json.encode(event) + b"\n\n"


def _stream_error(error: ProviderError) -> object:
    """OpenAI's error object; the message names the failure kind, never upstream text."""
    return openai_error_body(
        f"the upstream stream failed after it started: {error.kind.value}",
        type="server_error",
        code=error.kind.value,
    )["error"]


class HealthController(Controller):
    path = "/health"
    tags = ("health",)

    @get("/live")
    async def live(self) -> LiveOut:
        """The process is up and serving HTTP (liveness: restart it if this fails), and the
        build it runs (read once at start)."""
        build = build_info()
        return LiveOut(version=build.version, commit=build.commit)

    @get(
        "/ready",
        responses={
            503: ResponseSpec(
                HealthOut,
                description="This replica cannot take requests (config or ledger)",
                generate_examples=False,
            )
        },
    )
    @inject
    async def ready(
        self,
        health: FromDishka[HealthService],
        ledger: FromDishka[UsageLedger],
        settings: FromDishka[Settings],
    ) -> Response[HealthOut]:
        """Ready when this replica can take a request now: a provider is configured and the
        usage ledger writer runs with room in its buffer. Upstream trouble is shared by every
        replica, so it never makes one not ready (callers get fast typed 503s); it shows in
        /health/ai-providers and the metrics. Says loudly when caller authentication is
        disabled."""
        readiness = health.readiness(ledger.status())
        auth = settings.gateway_auth
        notes = list(readiness.problems)
        if auth == "disabled":
            notes.insert(0, "AUTHENTICATION DISABLED: every caller is anonymous")
        if readiness.configured and not readiness.usable:
            notes.append(
                "every configured provider is unhealthy (see /health/ai-providers); "
                "upstream trouble does not take a replica out of rotation"
            )
        status = readiness.ledger
        return Response(
            HealthOut(
                status="ready" if readiness.ready else "not_ready",
                providers_configured=list(readiness.configured),
                providers_usable=list(readiness.usable),
                auth=auth,
                ledger=LedgerOut(
                    writer_alive=status.writer_alive,
                    buffered_rows=status.buffered_rows,
                    buffer_max_rows=status.max_rows,
                ),
                detail="; ".join(notes) or None,
            ),
            status_code=HTTP_200_OK if readiness.ready else HTTP_503_SERVICE_UNAVAILABLE,
        )

    @get("/ai-providers")
    @inject
    async def providers(self, health: FromDishka[HealthService]) -> ProvidersHealthOut:
        """Each provider's health: status and reasons, latency, error rate, breaker state,
        adaptive timeout, keys (by short hash, with their state), and the last free probe;
        and whether shared state (Redis) is reachable from this replica."""
        reports = health.all()
        configured = [h for h in reports if h.status is not HealthStatus.NOT_CONFIGURED]
        if any(h.status is HealthStatus.HEALTHY for h in configured):
            overall = "healthy"
        elif any(h.status is HealthStatus.DEGRADED for h in configured):
            overall = "degraded"
        else:
            overall = "unhealthy"
        return ProvidersHealthOut(
            status=overall,
            shared_state=health.shared_state(),
            shared_replicas=health.shared_replicas(),
            providers=[
                ProviderHealthOut(
                    provider=h.provider.value,
                    status=h.status.value,
                    reasons=list(h.reasons),
                    p50_ms=h.p50_ms,
                    p95_ms=h.p95_ms,
                    error_rate=None if h.error_rate is None else round(h.error_rate, 4),
                    samples=h.samples,
                    breaker_state=h.breaker_state,
                    timeout_s=h.timeout_s,
                    keys_total=h.keys_total,
                    keys_available=h.keys_available,
                    keys=[
                        KeyOut(
                            id=k.id,
                            state=k.state.value,
                            retired_at=None if k.retired_at is None else k.retired_at.isoformat(),
                        )
                        for k in h.keys
                    ],
                    last_check=None
                    if h.last_check is None
                    else ProbeOut(
                        ok=h.last_check.ok,
                        at=h.last_check.at.isoformat(),
                        latency_ms=round(h.last_check.latency_ms, 3),
                        error=h.last_check.error,
                    ),
                )
                for h in reports
            ],
        )


__all__ = ["AIController", "HealthController"]
