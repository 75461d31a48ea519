"""HTTP surface of the AI module: the gateway API, the OpenAI-compatible API and readiness."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import msgspec
from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import Controller, Response, get, post
from litestar.exceptions import ValidationException
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from app.core.errors import GatewayError
from app.core.problems import openai_error_response
from app.core.settings import Settings
from app.modules.ai.domain import AIResponse
from app.modules.ai.requests import chat_request, completion_request
from app.modules.ai.schemas import (
    AttemptOut,
    ChatCompletionBody,
    ChatCompletionOut,
    ChatMessageOut,
    ChoiceOut,
    CompletionBody,
    CompletionOut,
    HealthOut,
    UsageOut,
)
from app.modules.ai.service import UnifiedAIService


def _usage(response: AIResponse) -> UsageOut:
    return UsageOut(
        prompt_tokens=response.usage.prompt_tokens,
        completion_tokens=response.usage.completion_tokens,
        total_tokens=response.usage.total_tokens,
    )


class AIController(Controller):
    path = "/v1"
    tags = ("ai",)

    @post("/ai/completions", status_code=HTTP_200_OK)
    @inject
    async def complete(
        self,
        data: CompletionBody,
        service: FromDishka[UnifiedAIService],
        settings: FromDishka[Settings],
    ) -> CompletionOut:
        """Answer a prompt from the cheapest working provider, with the route it took."""
        response = await service.complete(
            completion_request(data, settings), deadline_s=data.timeout_s
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
        exception_handlers={
            GatewayError: openai_error_response,
            ValidationException: openai_error_response,
        },
    )
    @inject
    async def chat_completions(
        self,
        data: ChatCompletionBody,
        service: FromDishka[UnifiedAIService],
        settings: FromDishka[Settings],
    ) -> ChatCompletionOut | Stream:
        """OpenAI-compatible Chat Completions; `stream: true` is answered as SSE once the
        upstream answer is complete (one content chunk, then the finish and usage chunks)."""
        response = await service.complete(chat_request(data, settings))
        completion = ChatCompletionOut(
            id=f"chatcmpl-{uuid.uuid4().hex}",
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
        if data.stream:
            include_usage = bool(data.stream_options and data.stream_options.include_usage)
            return Stream(
                _sse_chunks(completion, include_usage),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        return completion


async def _sse_chunks(completion: ChatCompletionOut, include_usage: bool) -> AsyncIterator[bytes]:
    base = {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
    }
    content = completion.choices[0].message.content
    finish = completion.choices[0].finish_reason
    events: list[dict[str, object]] = [
        base
        | {
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": content},
                    "finish_reason": None,
                }
            ]
        },
        base | {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
    ]
    if include_usage:
        events.append(base | {"choices": [], "usage": completion.usage.model_dump()})
    for event in events:
        yield b"data: " + msgspec.json.encode(event) + b"\n\n"
    yield b"data: [DONE]\n\n"


class HealthController(Controller):
    path = "/health"
    tags = ("health",)

    @get("/live")
    async def live(self) -> HealthOut:
        """The process is up and serving HTTP."""
        return HealthOut(status="ok")

    @get("/ready")
    @inject
    async def ready(self, service: FromDishka[UnifiedAIService]) -> Response[HealthOut]:
        """Ready when at least one provider is configured."""
        configured = [name.value for name in service.guards]
        if configured:
            return Response(HealthOut(status="ready", providers_configured=configured))
        return Response(
            HealthOut(status="not_ready", detail="no AI provider is configured (set an API key)"),
            status_code=HTTP_503_SERVICE_UNAVAILABLE,
        )


__all__ = ["AIController", "HealthController"]
