"""Google's native Gemini `generateContent` REST format."""

from __future__ import annotations

import re
from typing import Any

import httpx

from app.core.http import UpstreamClient
from app.core.settings import ProviderName
from app.modules.ai.domain import CompletionRequest, ProviderReply, Role
from app.modules.ai.errors import FailureKind, ProviderError
from app.modules.ai.providers.base import (
    classify_status,
    decode_json,
    encode_json,
    error_code,
    model_segment,
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
from app.modules.ai.structured import check_answer, gemini_schema

_SSE = {"alt": "sse"}  # streamGenerateContent as Server-Sent Events, not one JSON array
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def gemini_payload(request: CompletionRequest) -> dict[str, Any]:
    """System messages become `systemInstruction`; assistant turns are Gemini's `model` role."""
    system = [m.content for m in request.messages if m.role is Role.SYSTEM]
    contents = [
        {"role": "model" if m.role is Role.ASSISTANT else "user", "parts": [{"text": m.content}]}
        for m in request.messages
        if m.role is not Role.SYSTEM
    ]
    payload: dict[str, Any] = {"contents": contents}
    if system:
        payload["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.json_mode:
        config["responseMimeType"] = "application/json"
    if request.response_schema is not None:
        config["responseMimeType"] = "application/json"
        config["responseSchema"] = gemini_schema(request.response_schema.schema)
    if config:
        payload["generationConfig"] = config
    return payload


def _retry_delay(payload: Any) -> float | None:
    """Google puts the wait in `error.details[@type=RetryInfo].retryDelay` ("7s")."""
    try:
        details = payload["error"]["details"]
    except (KeyError, TypeError):
        return None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _status_error(response: httpx.Response, body: bytes) -> ProviderError:
    try:
        payload = decode_json(body)
    except ProviderError:
        payload = None
    code = error_code(payload)
    message = ""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        message = str(payload["error"].get("message", ""))
    status = response.status_code
    # Google answers a bad key with 400 INVALID_ARGUMENT, not 401.
    if status == 400 and ("API key" in message or "API_KEY_INVALID" in str(payload)):
        status = 401
    return classify_status(
        status,
        retry_after_s=parse_retry_after(response.headers) or _retry_delay(payload),
        code=code,
        message=f"HTTP {response.status_code}" + (f" ({code})" if code else ""),
    )


class GeminiAdapter:
    """`POST {base}/v1beta/models/{model}:generateContent` with `x-goog-api-key`; the model
    is one percent-encoded path segment."""

    name = ProviderName.GEMINI
    endpoint = "generateContent"

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client

    async def complete(self, request: CompletionRequest, model: str, key: ApiKey) -> ProviderReply:
        response, body = await send(
            self._client,
            "POST",
            f"v1beta/models/{model_segment(model)}:generateContent",
            headers={"x-goog-api-key": key.secret, "content-type": "application/json"},
            content=encode_json(gemini_payload(request)),
        )
        if response.status_code >= 300:
            raise _status_error(response, body)
        require_json_content_type(response)
        return _parse_reply(decode_json(body), request, model)

    async def stream(self, request: CompletionRequest, model: str, key: ApiKey) -> ProviderStream:
        return await open_stream(
            self._client,
            f"v1beta/models/{model_segment(model)}:streamGenerateContent",
            auth={"x-goog-api-key": key.secret},
            params=_SSE,
            payload=gemini_payload(request),
            parse=parse_stream_event,
            model=model,
            status_error=_status_error,
        )

    async def ping(self, key: ApiKey) -> None:
        response, body = await send(
            self._client, "GET", "v1beta/models", headers={"x-goog-api-key": key.secret}
        )
        if response.status_code >= 300:
            raise _status_error(response, body)

    async def aclose(self) -> None:
        await self._client.aclose()


def _parse_reply(data: Any, request: CompletionRequest, model: str) -> ProviderReply:
    try:
        candidate = data["candidates"][0]
        parts = candidate["content"]["parts"]
        content = "".join(str(part.get("text", "")) for part in parts)
    except (KeyError, IndexError, TypeError) as exc:
        blocked = isinstance(data, dict) and isinstance(data.get("promptFeedback"), dict)
        reason = "prompt blocked by safety filter" if blocked else "response has no candidates"
        raise ProviderError(FailureKind.BAD_RESPONSE, reason) from exc
    if not content:
        raise ProviderError(FailureKind.BAD_RESPONSE, "response has an empty candidate")
    if request.response_schema is not None:
        check_answer(request.response_schema, content)
    usage = data.get("usageMetadata")
    if isinstance(usage, dict) and "promptTokenCount" in usage:
        prompt_tokens = nonnegative_int(usage.get("promptTokenCount"))
        completion_tokens = nonnegative_int(usage.get("candidatesTokenCount", 0))
    else:
        prompt_tokens = estimate_tokens(request.messages)
        completion_tokens = estimate_tokens(content)
    return ProviderReply(
        content=content,
        model=str(data.get("modelVersion") or model),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finish_reason=str(candidate.get("finishReason", "")).lower() or None,
    )


def parse_stream_event(data: Any) -> StreamPiece:
    """One GenerateContentResponse of a stream; usageMetadata is cumulative, the last wins."""
    data = event_object(data)
    text, finish = "", None
    candidates = data.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        candidate = candidates[0]
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if isinstance(parts, list):
            text = "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
        finish = str(candidate.get("finishReason", "")).lower() or None
    usage = data.get("usageMetadata")
    counts = None
    if isinstance(usage, dict) and "promptTokenCount" in usage:
        counts = (
            nonnegative_int(usage.get("promptTokenCount")),
            nonnegative_int(usage.get("candidatesTokenCount", 0)),
        )
    model = data.get("modelVersion")
    return StreamPiece(text, finish, counts, model if isinstance(model, str) and model else None)
