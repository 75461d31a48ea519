"""OpenAI's Chat Completions wire format, spoken by OpenAI, Groq and (with its own URL and
header) Azure OpenAI."""

from __future__ import annotations

from typing import Any

import httpx

from app.core.http import UpstreamClient
from app.core.settings import ProviderName
from app.modules.ai.domain import CompletionRequest, ProviderReply
from app.modules.ai.errors import FailureKind, ProviderError
from app.modules.ai.providers.base import (
    classify_status,
    decode_json,
    encode_json,
    error_code,
    nonnegative_int,
    parse_retry_after,
    require_json_content_type,
    send,
)
from app.modules.ai.providers.keys import ApiKey
from app.modules.ai.providers.streaming import (
    ProviderStream,
    StreamPiece,
    event_object,
    open_stream,
)
from app.modules.ai.providers.tokens import estimate_tokens
from app.modules.ai.structured import check_answer, openai_response_format


def chat_payload(request: CompletionRequest, model: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "messages": [{"role": m.role.value, "content": m.content} for m in request.messages],
    }
    if model is not None:
        payload["model"] = model
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.max_tokens is not None:
        payload["max_tokens"] = request.max_tokens
    if request.response_schema is not None:
        payload["response_format"] = openai_response_format(request.response_schema)
    elif request.json_mode:
        payload["response_format"] = {"type": "json_object"}
    return payload


def parse_chat_reply(
    response: httpx.Response, body: bytes, request: CompletionRequest, model: str
) -> ProviderReply:
    """Read a chat.completion body, or classify the failure it describes."""
    if response.status_code >= 300:
        raise status_error(response, body)
    require_json_content_type(response)
    data = decode_json(body)
    try:
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ProviderError(FailureKind.BAD_RESPONSE, "response has no choices") from exc
    if not isinstance(content, str) or not content:
        raise ProviderError(FailureKind.BAD_RESPONSE, "response has an empty message")
    if request.response_schema is not None:
        check_answer(request.response_schema, content)
    usage = data.get("usage")
    if isinstance(usage, dict):
        prompt_tokens = nonnegative_int(usage.get("prompt_tokens"))
        completion_tokens = nonnegative_int(usage.get("completion_tokens"))
    else:
        prompt_tokens = estimate_tokens(request.messages)
        completion_tokens = estimate_tokens(content)
    return ProviderReply(
        content=content,
        model=str(data.get("model") or model),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finish_reason=choice.get("finish_reason"),
    )


def stream_payload(request: CompletionRequest, model: str | None) -> dict[str, Any]:
    """The same request, streamed, with the usage chunk at the end (real token counts)."""
    return chat_payload(request, model) | {
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def parse_chat_chunk(data: Any) -> StreamPiece:
    """One chat.completion.chunk: a text delta, a finish reason, or the final usage."""
    data = event_object(data)
    text, finish = "", None
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            text = delta["content"]
        reason = choices[0].get("finish_reason")
        finish = reason if isinstance(reason, str) else None
    usage = data.get("usage")
    counts = None
    if isinstance(usage, dict):
        counts = (
            nonnegative_int(usage.get("prompt_tokens")),
            nonnegative_int(usage.get("completion_tokens")),
        )
    model = data.get("model")
    return StreamPiece(text, finish, counts, model if isinstance(model, str) and model else None)


def status_error(response: httpx.Response, body: bytes) -> ProviderError:
    try:
        payload = decode_json(body)
    except ProviderError:
        payload = None
    code = error_code(payload)
    return classify_status(
        response.status_code,
        retry_after_s=parse_retry_after(response.headers),
        code=code,
        message=f"HTTP {response.status_code}" + (f" ({code})" if code else ""),
    )


class OpenAICompatibleAdapter:
    """`POST {base}/chat/completions` with `Authorization: Bearer`: OpenAI and Groq."""

    endpoint = "chat/completions"

    def __init__(self, name: ProviderName, client: UpstreamClient) -> None:
        self.name = name
        self._client = client

    async def complete(self, request: CompletionRequest, model: str, key: ApiKey) -> ProviderReply:
        response, body = await send(
            self._client,
            "POST",
            "chat/completions",
            headers={
                "authorization": f"Bearer {key.secret}",
                "content-type": "application/json",
            },
            content=encode_json(chat_payload(request, model)),
        )
        return parse_chat_reply(response, body, request, model)

    async def stream(self, request: CompletionRequest, model: str, key: ApiKey) -> ProviderStream:
        return await open_stream(
            self._client,
            "chat/completions",
            auth={"authorization": f"Bearer {key.secret}"},
            payload=stream_payload(request, model),
            parse=parse_chat_chunk,
            model=model,
            status_error=status_error,
        )

    async def ping(self, key: ApiKey) -> None:
        response, body = await send(
            self._client, "GET", "models", headers={"authorization": f"Bearer {key.secret}"}
        )
        if response.status_code >= 300:
            raise status_error(response, body)

    async def aclose(self) -> None:
        await self._client.aclose()
