"""OpenAI (api.openai.com/v1) and Groq (api.groq.com/openai/v1) wire formats.

Groq is OpenAI-compatible but not identical: compact JSON, no ``param``/``code``
when absent, ``x_groq`` blocks, timing fields in ``usage``, RPD-style
``x-ratelimit-*`` headers.  Both share the envelope
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Final

from .common import (
    SSE_CT,
    BadRequest,
    CallInfo,
    ChatRequest,
    Reply,
    Usage,
    dumps,
    fmt_duration,
    fmt_seconds,
    json_reply,
    openai_text,
    pieces,
    reason,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..catalog import Catalog, Provider

# -- OpenAI and friends ------------------------------------------------------------

_OPENAI_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class OpenAIDialect:
    """api.openai.com/v1: Bearer auth, chat.completions, OpenAI error envelope."""

    provider: ClassVar[Provider] = "openai"
    pretty: ClassVar[bool] = True
    needs_model: ClassVar[bool] = True

    # auth ----------------------------------------------------------------------

    def extract_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        value = headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()

    def redact_headers(self) -> tuple[str, ...]:
        return ("authorization",)

    # request -------------------------------------------------------------------

    def parse(self, body: object, path_model: str | None) -> ChatRequest:
        if not isinstance(body, dict):
            raise BadRequest(
                "We could not parse the JSON body of your request. (HINT: This likely means"
                " you aren't using your HTTP library correctly. The OpenAI API expects a"
                " JSON payload, but what was sent was not valid JSON.)"
            )
        model = path_model or body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter", "model")
        messages = body.get("messages")
        if messages is None:
            raise BadRequest("Missing required parameter: 'messages'.", "messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest(
                "Invalid 'messages': empty array. Expected an array with minimum length 1,"
                " but got an empty array instead.",
                "messages",
            )
        texts: list[str] = []
        last_user = ""
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise BadRequest(
                    f"Invalid type for 'messages[{i}]': expected an object.", f"messages[{i}]"
                )
            role = msg.get("role")
            if role not in _OPENAI_ROLES:
                raise BadRequest(
                    f"Invalid value: '{role}'. Supported values are: 'system', 'assistant',"
                    " 'user', 'function', 'tool', and 'developer'.",
                    f"messages[{i}].role",
                )
            text = openai_text(msg.get("content"))
            texts.append(text)
            if role == "user":
                last_user = text
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            raise BadRequest(
                "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1,"
                f" but got {max_tokens} instead.",
                "max_tokens",
            )
        fmt = body.get("response_format")
        json_mode = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
        schema = None
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise BadRequest(
                    "Missing required parameter: 'response_format.json_schema.name'.",
                    "response_format.json_schema.name",
                )
            schema = spec.get("schema", {})
        options = body.get("stream_options")
        return ChatRequest(
            model=model,
            texts=texts,
            last_user_text=last_user,
            json_mode=json_mode,
            schema=schema,
            max_tokens=max_tokens,
            stream=body.get("stream") is True,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )

    # success -------------------------------------------------------------------

    def headers(self, info: CallInfo) -> dict[str, str]:
        rate = info.rate
        limit, remaining, reset = (
            (rate.limit, rate.remaining, rate.reset_s) if rate else (10000, 9999, 0.006)
        )
        return {
            "x-request-id": f"req_{info.request_id}",
            "openai-organization": "org-sandbox",
            "openai-processing-ms": "1",
            "openai-version": "2020-10-01",
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": fmt_duration(reset),
            "x-ratelimit-limit-tokens": "10000000",
            "x-ratelimit-remaining-tokens": "9999000",
            "x-ratelimit-reset-tokens": "0s",
        }

    def _usage(self, usage: Usage) -> dict[str, Any]:
        return {
            "prompt_tokens": usage.prompt,
            "completion_tokens": usage.completion,
            "total_tokens": usage.total,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }

    def _envelope(self, info: CallInfo, served_model: str, obj: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{info.request_id[:24]}",
            "object": obj,
            "created": int(time.time()),
            "model": served_model,
        }

    def completion_body(
        self, req: ChatRequest, content: str, usage: Usage, served_model: str, info: CallInfo
    ) -> dict[str, Any]:
        return {
            **self._envelope(info, served_model, "chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(usage),
            "system_fingerprint": "fp_sandbox",
        }

    def completion(
        self, req: ChatRequest, content: str, usage: Usage, served_model: str, info: CallInfo
    ) -> Reply:
        body = self.completion_body(req, content, usage, served_model, info)
        return json_reply(200, body, self.headers(info), pretty=self.pretty)

    def empty(self, req: ChatRequest, usage: Usage, served_model: str, info: CallInfo) -> Reply:
        body = self.completion_body(req, "", usage, served_model, info)
        body["choices"] = []
        return json_reply(200, body, self.headers(info), pretty=self.pretty)

    def _chunk(
        self, base: dict[str, Any], delta: dict[str, Any], finish: str | None, req: ChatRequest
    ) -> dict[str, Any]:
        chunk = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if req.include_usage:
            chunk["usage"] = None
        return chunk

    def stream_events(
        self, req: ChatRequest, content: str, usage: Usage, served_model: str, info: CallInfo
    ) -> list[dict[str, Any]]:
        """Chunk objects in order (without the final ``[DONE]`` sentinel)."""
        base = {
            **self._envelope(info, served_model, "chat.completion.chunk"),
            "system_fingerprint": "fp_sandbox",
        }
        events = [
            self._chunk(base, {"role": "assistant", "content": "", "refusal": None}, None, req)
        ]
        events += [self._chunk(base, {"content": p}, None, req) for p in pieces(content) if p]
        events.append(self._chunk(base, {}, "stop", req))
        if req.include_usage:
            events.append({**base, "choices": [], "usage": self._usage(usage)})
        return events

    def sse_frame(self, event: dict[str, Any]) -> bytes:
        return b"data: " + dumps(event) + b"\n\n"

    def sse_done(self) -> bytes:
        return b"data: [DONE]\n\n"

    def stream_frames(
        self, req: ChatRequest, content: str, usage: Usage, served_model: str, info: CallInfo
    ) -> list[bytes]:
        events = self.stream_events(req, content, usage, served_model, info)
        return [self.sse_frame(e) for e in events] + [self.sse_done()]

    def empty_event(self, usage: Usage, served_model: str, info: CallInfo) -> dict[str, Any]:
        """A well-formed chunk that carries no choices at all."""
        base = self._envelope(info, served_model, "chat.completion.chunk")
        return {**base, "choices": [], "usage": self._usage(usage)}

    def stream_headers(self, info: CallInfo) -> dict[str, str]:
        return {"Content-Type": SSE_CT, "Cache-Control": "no-cache", **self.headers(info)}

    # probes ----------------------------------------------------------------------

    def model_obj(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 1700000000, "owned_by": "system"}

    def models(self, catalog: Catalog, info: CallInfo) -> Reply:
        data = [self.model_obj(m) for m in catalog.models[self.provider]]
        return json_reply(
            200, {"object": "list", "data": data}, self.headers(info), pretty=self.pretty
        )

    def model(self, catalog: Catalog, name: str, info: CallInfo) -> Reply:
        if not catalog.has_model(self.provider, name):
            return self.model_not_found(name)
        return json_reply(200, self.model_obj(name), self.headers(info), pretty=self.pretty)

    def empty_models(self, info: CallInfo) -> Reply:
        return json_reply(
            200, {"object": "list", "data": []}, self.headers(info), pretty=self.pretty
        )

    # errors ----------------------------------------------------------------------

    def error(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | int | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        return json_reply(status, body, headers, pretty=self.pretty)

    def invalid_key(self, key: str | None) -> Reply:
        if key is None:
            return self.error(
                401,
                "You didn't provide an API key. You need to provide your API key in an"
                " Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
            )
        shown = f"{key[:3]}*****{key[-4:]}" if len(key) > 8 else "*****"
        return self.error(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key at"
            " https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )

    def bad_request(self, exc: BadRequest) -> Reply:
        return self.error(400, exc.message, "invalid_request_error", None, exc.param)

    def model_not_found(self, model: str) -> Reply:
        return self.error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        )

    def decommissioned(self, model: str) -> Reply:
        return self.error(
            400,
            f"The model `{model}` has been decommissioned and is no longer supported."
            " Please refer to the deprecations page for a recommendation on which model"
            " to use instead.",
            "invalid_request_error",
            "model_decommissioned",
        )

    def rate_limited(self, info: CallInfo, retry_after: float, limit: int) -> Reply:
        message = (
            f"Rate limit reached for {info.model} in organization org-sandbox on requests"
            f" per min (RPM): Limit {limit}, Used {limit}, Requested 1."
            f" Please try again in {fmt_seconds(retry_after)}s."
            " Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        headers = {
            **self.headers(info),
            "retry-after": fmt_seconds(retry_after),
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": fmt_duration(retry_after),
        }
        return self.error(429, message, "requests", "rate_limit_exceeded", headers=headers)

    _SERVER: ClassVar[dict[int, tuple[str, str, str | int | None]]] = {
        500: (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
        502: ("Bad gateway.", "cf_bad_gateway", 502),
        503: ("The engine is currently overloaded, please try again later.", "server_error", None),
        504: ("Gateway timeout.", "cf_gateway_timeout", 504),
    }

    def server_error(self, status: int, retry_after: float | None, info: CallInfo) -> Reply:
        if status == 429:
            return self.rate_limited(info, retry_after if retry_after is not None else 1.0, 30)
        headers = {"x-request-id": f"req_{info.request_id}"}
        if retry_after is not None and status == 503:
            headers["retry-after"] = fmt_seconds(retry_after)
        message, type_, code = self._SERVER.get(
            status,
            (reason(status), "server_error" if status >= 500 else "invalid_request_error", None),
        )
        return self.error(status, message, type_, code, headers=headers)

    def route_not_found(self, method: str, path: str) -> Reply:
        return self.error(404, f"Invalid URL ({method} {path})", "invalid_request_error")


class GroqDialect(OpenAIDialect):
    """api.groq.com/openai/v1: OpenAI-compatible, compact JSON, ``x_groq`` extras."""

    provider: ClassVar[Provider] = "groq"
    pretty: ClassVar[bool] = False

    def headers(self, info: CallInfo) -> dict[str, str]:
        rate = info.rate
        limit, remaining, reset = (
            (rate.limit, rate.remaining, rate.reset_s) if rate else (14400, 14399, 6.0)
        )
        return {
            "x-request-id": f"req_{info.request_id[:26]}",
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": fmt_duration(reset),
            "x-ratelimit-limit-tokens": "6000",
            "x-ratelimit-remaining-tokens": "5990",
            "x-ratelimit-reset-tokens": "100ms",
        }

    def _usage(self, usage: Usage) -> dict[str, Any]:
        return {
            "queue_time": 0.0001,
            "prompt_tokens": usage.prompt,
            "prompt_time": 0.0001,
            "completion_tokens": usage.completion,
            "completion_time": 0.0001,
            "total_tokens": usage.total,
            "total_time": 0.0003,
        }

    def completion_body(
        self, req: ChatRequest, content: str, usage: Usage, served_model: str, info: CallInfo
    ) -> dict[str, Any]:
        body = super().completion_body(req, content, usage, served_model, info)
        body["choices"][0]["message"] = {"role": "assistant", "content": content}
        body["usage_breakdown"] = None
        body["x_groq"] = {"id": f"req_{info.request_id[:26]}"}
        body["service_tier"] = "on_demand"
        return body

    def stream_events(
        self, req: ChatRequest, content: str, usage: Usage, served_model: str, info: CallInfo
    ) -> list[dict[str, Any]]:
        events = super().stream_events(req, content, usage, served_model, info)
        groq_id = f"req_{info.request_id[:26]}"
        events[0]["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        events[0]["x_groq"] = {"id": groq_id}
        final = next(e for e in reversed(events) if e["choices"])
        final["x_groq"] = {"id": groq_id, "usage": self._usage(usage)}
        return events

    def model_obj(self, name: str) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": 1693721698,
            "owned_by": "Meta" if "llama" in name else "Google" if "gemma" in name else "Groq",
            "active": True,
            "context_window": 131072,
            "public_apps": None,
            "max_completion_tokens": 8192,
        }

    def invalid_key(self, key: str | None) -> Reply:
        return self.error(401, "Invalid API Key", "invalid_request_error", "invalid_api_key")

    def error(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | int | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        # Groq omits ``param`` and omits ``code`` when there is none.
        err: dict[str, Any] = {"message": message, "type": type_}
        if param is not None:
            err["param"] = param
        if code is not None:
            err["code"] = code
        return json_reply(status, {"error": err}, headers)

    def rate_limited(self, info: CallInfo, retry_after: float, limit: int) -> Reply:
        message = (
            f"Rate limit reached for model `{info.model}` in organization `org_sandbox`"
            " service tier `on_demand` on requests per minute (RPM):"
            f" Limit {limit}, Used {limit}, Requested 1."
            f" Please try again in {fmt_seconds(retry_after)}s."
            " Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing"
        )
        headers = {
            **self.headers(info),
            "retry-after": fmt_seconds(retry_after),
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": fmt_duration(retry_after),
        }
        return self.error(429, message, "requests", "rate_limit_exceeded", headers=headers)

    def server_error(self, status: int, retry_after: float | None, info: CallInfo) -> Reply:
        if status == 429:
            return self.rate_limited(info, retry_after if retry_after is not None else 1.0, 30)
        headers = {"x-request-id": f"req_{info.request_id[:26]}"}
        if retry_after is not None and status == 503:
            headers["retry-after"] = fmt_seconds(retry_after)
        type_ = "internal_server_error" if status >= 500 else "invalid_request_error"
        return self.error(status, reason(status), type_, headers=headers)

    def route_not_found(self, method: str, path: str) -> Reply:
        return self.error(
            404,
            "Unknown request URL: " + f"{method} {path}. Please check the URL for typos.",
            "invalid_request_error",
            "unknown_url",
        )
