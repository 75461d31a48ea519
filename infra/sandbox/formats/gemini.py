"""Google Gemini (generativelanguage.googleapis.com/v1beta) wire format.

Google RPC-style errors ``{"error": {"code": 429, "message", "status":
"RESOURCE_EXHAUSTED", "details": [...]}}``, pretty-printed JSON, a 400 (not 401)
for a bad API key, and ``alt=sse`` streaming with CRLF-separated events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from .common import (
    BadRequest,
    CallInfo,
    ChatRequest,
    Reply,
    Usage,
    dumps,
    fmt_seconds,
    json_reply,
    pieces,
    reason,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..catalog import Catalog, Provider

# -- Gemini ------------------------------------------------------------------------

_GOOGLE_STATUS: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_GOOGLE_SERVER_MESSAGES: Final = {
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    502: "Bad Gateway",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}

GEMINI_JSON_CT: Final = "application/json; charset=UTF-8"
_GEMINI_QUOTA_METRIC: Final = (
    "generativelanguage.googleapis.com/generate_content_free_tier_requests"
)


class GeminiDialect:
    """generativelanguage.googleapis.com/v1beta: ``x-goog-api-key``, Google RPC errors."""

    provider: ClassVar[Provider] = "gemini"
    needs_model: ClassVar[bool] = True

    def extract_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return headers.get("x-goog-api-key") or query.get("key") or None

    def redact_headers(self) -> tuple[str, ...]:
        return ("x-goog-api-key",)

    def parse(self, body: object, path_model: str | None) -> ChatRequest:
        if not isinstance(body, dict):
            raise BadRequest("Invalid JSON payload received. Expected an object.")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise BadRequest("* GenerateContentRequest.contents: contents is not specified\n")
        texts: list[str] = []
        system = body.get("systemInstruction") or body.get("system_instruction")
        if isinstance(system, dict):
            texts.append(self._parts_text(system.get("parts")))
        last_user = ""
        for content in contents:
            if not isinstance(content, dict):
                raise BadRequest("Invalid JSON payload received. Expected an object in 'contents'.")
            role = content.get("role")
            if role not in (None, "user", "model"):
                raise BadRequest("Please use a valid role: user, model.")
            text = self._parts_text(content.get("parts"))
            texts.append(text)
            if role != "model":
                last_user = text
        config = body.get("generationConfig") or body.get("generation_config") or {}
        if not isinstance(config, dict):
            raise BadRequest("Invalid JSON payload received. 'generationConfig' must be an object.")
        max_out = config.get("maxOutputTokens", config.get("max_output_tokens"))
        mime = config.get("responseMimeType", config.get("response_mime_type"))
        return ChatRequest(
            model=path_model or "",
            texts=texts,
            last_user_text=last_user,
            json_mode=mime == "application/json",
            schema=config.get("responseSchema", config.get("responseJsonSchema"))
            if mime == "application/json"
            else None,
            max_tokens=max_out if isinstance(max_out, int) and max_out >= 1 else None,
        )

    @staticmethod
    def _parts_text(parts: object) -> str:
        if not isinstance(parts, list):
            return ""
        return "".join(
            p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
        )

    def headers(self, info: CallInfo) -> dict[str, str]:
        return {
            "Vary": "Origin, X-Origin, Referer",
            "Server": "scaffolding on HTTPServer2",
            "X-Content-Type-Options": "nosniff",
        }

    def _usage(self, usage: Usage) -> dict[str, Any]:
        return {
            "promptTokenCount": usage.prompt,
            "candidatesTokenCount": usage.completion,
            "totalTokenCount": usage.total,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.prompt}],
        }

    def completion_body(
        self, req: ChatRequest, content: str, usage: Usage, served_model: str, info: CallInfo
    ) -> dict[str, Any]:
        return {
            "candidates": [
                {
                    "content": {"parts": [{"text": content}], "role": "model"},
                    "finishReason": "STOP",
                    "avgLogprobs": -0.05,
                    "index": 0,
                }
            ],
            "usageMetadata": self._usage(usage),
            "modelVersion": served_model,
            "responseId": info.request_id[:22],
        }

    def completion(
        self, req: ChatRequest, content: str, usage: Usage, served_model: str, info: CallInfo
    ) -> Reply:
        body = self.completion_body(req, content, usage, served_model, info)
        return json_reply(200, body, self.headers(info), pretty=True, content_type=GEMINI_JSON_CT)

    def empty(self, req: ChatRequest, usage: Usage, served_model: str, info: CallInfo) -> Reply:
        body = self.completion_body(req, "", usage, served_model, info)
        del body["candidates"]
        return json_reply(200, body, self.headers(info), pretty=True, content_type=GEMINI_JSON_CT)

    def stream_events(
        self, req: ChatRequest, content: str, usage: Usage, served_model: str, info: CallInfo
    ) -> list[dict[str, Any]]:
        parts = pieces(content)
        events: list[dict[str, Any]] = []
        for i, text in enumerate(parts):
            last = i == len(parts) - 1
            candidate: dict[str, Any] = {
                "content": {"parts": [{"text": text}], "role": "model"},
                "index": 0,
            }
            if last:
                candidate["finishReason"] = "STOP"
            events.append(
                {
                    "candidates": [candidate],
                    "usageMetadata": self._usage(usage)
                    if last
                    else {"promptTokenCount": usage.prompt, "totalTokenCount": usage.prompt},
                    "modelVersion": served_model,
                    "responseId": info.request_id[:22],
                }
            )
        return events

    def sse_frame(self, event: dict[str, Any]) -> bytes:
        return b"data: " + dumps(event) + b"\r\n\r\n"

    def sse_done(self) -> bytes:
        return b""  # Gemini just ends the stream

    def stream_frames(
        self, req: ChatRequest, content: str, usage: Usage, served_model: str, info: CallInfo
    ) -> list[bytes]:
        events = self.stream_events(req, content, usage, served_model, info)
        return [self.sse_frame(e) for e in events]

    def empty_event(self, usage: Usage, served_model: str, info: CallInfo) -> dict[str, Any]:
        """A well-formed chunk without ``candidates`` (what a blocked answer looks like)."""
        return {
            "usageMetadata": self._usage(usage),
            "modelVersion": served_model,
            "responseId": info.request_id[:22],
        }

    def stream_headers(self, info: CallInfo) -> dict[str, str]:
        return {"Content-Type": "text/event-stream", **self.headers(info)}

    def array_stream(
        self, req: ChatRequest, content: str, usage: Usage, served_model: str, info: CallInfo
    ) -> Reply:
        """``streamGenerateContent`` without ``alt=sse``: one JSON array of chunks."""
        events = self.stream_events(req, content, usage, served_model, info)
        return json_reply(200, events, self.headers(info), pretty=True, content_type=GEMINI_JSON_CT)

    def model_obj(self, name: str) -> dict[str, Any]:
        pretty = " ".join(w.capitalize() for w in name.split("-"))
        return {
            "name": f"models/{name}",
            "version": "001",
            "displayName": pretty,
            "description": f"Sandbox stand-in for {pretty}.",
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 8192,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
            "temperature": 1,
            "topP": 0.95,
            "topK": 40,
            "maxTemperature": 2,
        }

    def models(self, catalog: Catalog, info: CallInfo) -> Reply:
        body = {"models": [self.model_obj(m) for m in catalog.models["gemini"]]}
        return json_reply(200, body, self.headers(info), pretty=True, content_type=GEMINI_JSON_CT)

    def model(self, catalog: Catalog, name: str, info: CallInfo) -> Reply:
        if not catalog.has_model("gemini", name):
            return self.google_error(404, f"models/{name} is not found for API version v1beta.")
        return json_reply(
            200, self.model_obj(name), self.headers(info), pretty=True, content_type=GEMINI_JSON_CT
        )

    def empty_models(self, info: CallInfo) -> Reply:
        return json_reply(200, {}, self.headers(info), pretty=True, content_type=GEMINI_JSON_CT)

    def google_error(
        self,
        status: int,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        err: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _GOOGLE_STATUS.get(status, "UNKNOWN"),
        }
        if details:
            err["details"] = details
        return json_reply(status, {"error": err}, headers, pretty=True, content_type=GEMINI_JSON_CT)

    def invalid_key(self, key: str | None) -> Reply:
        if key is None:
            return self.google_error(
                403,
                "Method doesn't allow unregistered callers (callers without established identity)."
                " Please use API Key or other form of API consumer identity to call this API.",
            )
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ]
        return self.google_error(400, "API key not valid. Please pass a valid API key.", details)

    def bad_request(self, exc: BadRequest) -> Reply:
        return self.google_error(400, exc.message)

    def model_not_found(self, model: str) -> Reply:
        return self.google_error(
            404,
            f"models/{model} is not found for API version v1beta, or is not supported for"
            " generateContent. Call ListModels to see the list of available models and their"
            " supported methods.",
        )

    def decommissioned(self, model: str) -> Reply:
        # Google answers retired models with the same 404 as unknown ones.
        return self.model_not_found(model)

    def rate_limited(self, info: CallInfo, retry_after: float, limit: int) -> Reply:
        details: list[dict[str, Any]] = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": _GEMINI_QUOTA_METRIC,
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": info.model},
                        "quotaValue": str(limit),
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{fmt_seconds(retry_after)}s",
            },
        ]
        return self.google_error(
            429,
            "You exceeded your current quota, please check your plan and billing details. For more"
            " information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
            details,
            {"retry-after": fmt_seconds(retry_after)},
        )

    def server_error(self, status: int, retry_after: float | None, info: CallInfo) -> Reply:
        if status == 429:
            return self.rate_limited(info, retry_after if retry_after is not None else 1.0, 15)
        headers = (
            {"retry-after": fmt_seconds(retry_after)}
            if retry_after is not None and status == 503
            else None
        )
        message = _GOOGLE_SERVER_MESSAGES.get(status, reason(status))
        return self.google_error(status, message, headers=headers)

    def route_not_found(self, method: str, path: str) -> Reply:
        return self.google_error(404, "Method not found.")
