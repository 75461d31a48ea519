"""The AI module's HTTP shapes: the gateway's own API and the OpenAI-compatible one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.core.settings import RoutingStrategy
from app.modules.ai.domain import Intent


def _temperature() -> Any:
    """An optional temperature, 0..2. Spelled as the field's own bounds, with the 0 repeated in
    `json_schema_extra`: Litestar's OpenAPI drops a bound inside `X | None` and a bound of 0."""
    return Field(
        default=None,
        ge=0.0,
        le=2.0,
        description="Sampling temperature, 0..2 (0: deterministic, and cached)",
        json_schema_extra={"minimum": 0.0},
    )


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class CompletionBody(BaseModel):
    """`POST /v1/ai/completions`: either `prompt` (with an optional `system`) or `messages`."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(default=None, min_length=1)
    messages: list[MessageIn] | None = Field(
        default=None,
        min_length=1,
        description="The conversation, oldest first; at most AI_MAX_MESSAGES (default 2048), "
        "more is refused with 413 before any message is parsed",
        # Litestar writes an optional list's bound as minLength; an array's is minItems.
        json_schema_extra={"min_items": 1, "min_length": None},
    )
    system: str | None = Field(default=None, min_length=1)
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Alias (fast, quality), a model name, or provider/model; default fast",
    )
    temperature: float | None = _temperature()
    max_tokens: int | None = Field(default=None, ge=1)
    json_mode: bool = False
    intent: Intent | None = None
    strategy: RoutingStrategy | None = None
    timeout_s: float | None = Field(
        default=None, gt=0, le=600, description="Deadline for this request, at most the server's"
    )
    cache: bool = Field(
        default=False,
        description="Use the response cache (always used when temperature is 0)",
    )

    @model_validator(mode="after")
    def _one_input(self) -> CompletionBody:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("send exactly one of 'prompt' or 'messages'")
        return self


class UsageOut(BaseModel):
    prompt_tokens: int = Field(ge=0, examples=[412])
    completion_tokens: int = Field(ge=0, examples=[96])
    total_tokens: int = Field(ge=0, examples=[508])


class AttemptOut(BaseModel):
    provider: str
    model: str | None
    outcome: Literal["success", "error", "skipped"]
    error_type: str | None
    latency_ms: float


class CompletionOut(BaseModel):
    content: str = Field(examples=["The full text is available (PMC4267813)."])
    provider: str = Field(examples=["groq"])
    model: str = Field(examples=["llama-3.1-8b-instant"])
    usage: UsageOut
    cost_usd: float = Field(ge=0, examples=[0.0], description="0 on a free tier or a cache hit")
    latency_ms: float = Field(ge=0, examples=[412.7])
    cached: bool
    attempts: list[AttemptOut]


# --- OpenAI-compatible -------------------------------------------------------------------


class ContentPart(BaseModel):
    """Only text parts: images and audio are not routed by this gateway."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str = Field(min_length=1)


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, Field(min_length=1)] | Annotated[list[ContentPart], Field(min_length=1)]
    name: str | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionBody(BaseModel):
    """The subset of OpenAI's Chat Completions request the gateway honours; unknown fields
    are accepted and ignored, as OpenAI's SDKs send some by default."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessageIn] = Field(
        min_length=1,
        description="At most AI_MAX_MESSAGES (default 2048); more is refused with 413 before "
        "any message is parsed",
    )
    temperature: float | None = _temperature()
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: ResponseFormat | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=1, description="Only one choice is supported")
    tools: list[dict[str, Any]] | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str = Field(examples=["The abstract describes a randomised controlled trial."])


class ChoiceOut(BaseModel):
    index: int = Field(ge=0, examples=[0])
    message: ChatMessageOut
    finish_reason: str = Field(examples=["stop"])
    logprobs: None = None


class ChatCompletionOut(BaseModel):
    id: str = Field(examples=["chatcmpl-5f0c2a9e41d7b3c8"])
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(examples=[1767225600])
    model: str = Field(examples=["gpt-4o-mini"])
    choices: list[ChoiceOut] = Field(min_length=1, max_length=1)
    usage: UsageOut
    provider: str = Field(
        description="Gateway extension: the provider that answered", examples=["openai"]
    )
    cost_usd: float = Field(
        ge=0, description="Gateway extension: cost of this call in USD", examples=[0.000119]
    )


class ModelOut(BaseModel):
    """One routable name, as OpenAI describes a model."""

    id: str = Field(description="An alias (fast, quality) or provider/model")
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the gateway started serving it")
    owned_by: str = Field(description="The provider, or literature-ai-gateway for an alias")


class ModelListOut(BaseModel):
    """`GET /v1/models`: every name the gateway can route, in OpenAI's list shape."""

    object: Literal["list"] = "list"
    data: list[ModelOut]


class LiveOut(BaseModel):
    """`GET /health/live`: the process answers HTTP, and which build it is."""

    status: Literal["ok"] = "ok"
    version: str = Field(description="The package version", examples=["0.1.0"])
    commit: str = Field(
        description="The commit it was built from (GIT_COMMIT), or unknown",
        examples=["fa61437"],
    )


class LedgerOut(BaseModel):
    writer_alive: bool = Field(description="The background ledger writer is running")
    buffered_rows: int = Field(description="Rows waiting to be written")
    buffer_max_rows: int = Field(description="LEDGER_BUFFER_MAX_ROWS: past it rows are dropped")


class HealthOut(BaseModel):
    """`GET /health/ready`: whether this replica can take a request now. Provider health is
    informational here (`providers_usable`); it never makes a replica not ready."""

    status: Literal["ok", "ready", "not_ready"]
    providers_configured: list[str] = Field(default_factory=list)
    providers_usable: list[str] = Field(
        default_factory=list,
        description="Configured providers not unhealthy now (see /health/ai-providers)",
    )
    auth: Literal["enabled", "disabled"] | None = None
    ledger: LedgerOut | None = None
    detail: str | None = None


class ProbeOut(BaseModel):
    ok: bool
    at: str = Field(description="When the probe ran (UTC, ISO 8601)")
    latency_ms: float
    error: str | None


class KeyOut(BaseModel):
    id: str = Field(description="First 8 hex digits of the key's SHA-256; never the key")
    state: Literal["active", "resting", "retired"] = Field(
        description="resting after a 429 until its Retry-After; retired after a 401/403 until "
        "a health probe with it is accepted"
    )
    retired_at: str | None = Field(description="When it was refused (UTC, ISO 8601)")


class ProviderHealthOut(BaseModel):
    provider: str
    status: Literal["healthy", "degraded", "unhealthy", "not_configured"]
    reasons: list[str]
    p50_ms: float | None
    p95_ms: float | None
    error_rate: float | None
    samples: int
    breaker_state: Literal["closed", "open", "half_open"] | None
    timeout_s: float | None
    keys_total: int
    keys_available: int
    keys: list[KeyOut] = Field(default_factory=list)
    last_check: ProbeOut | None


class ProvidersHealthOut(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    providers: list[ProviderHealthOut]
    shared_state: Literal["ok", "degraded", "disabled"] = Field(
        default="disabled",
        description="Redis (REDIS_URL): ok; degraded while unreachable (breakers, cache, "
        "budgets and limits then run on this replica's own state); disabled without it. "
        "Never a reason to leave /health/ready",
    )
    shared_replicas: int | None = Field(
        default=None, description="Replicas (worker processes) alive at the last heartbeat"
    )


class UsageLineOut(BaseModel):
    provider: str
    model: str | None
    attempts: int
    successes: int
    cache_hits: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class CallerUsageOut(BaseModel):
    caller: str
    day: str
    lines: list[UsageLineOut]
    cost_usd: float
    # This month's (in BUDGET_TIMEZONE), the same sums.
    month: str
    month_lines: list[UsageLineOut]
    month_cost_usd: float


class BudgetOut(BaseModel):
    budget: str
    # "day" (resets at midnight) or "month" (resets on the first), in BUDGET_TIMEZONE.
    period: str
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    remaining_usd: float
    day: str
    month: str
    resets_in_s: int


class BudgetsOut(BaseModel):
    budgets: list[BudgetOut]
    # Where this replica's numbers come from: in-process (REDIS_URL unset), redis, or while
    # Redis is away local-share (this replica spends its outage reserve).
    store: str


# --- the streamed answer (`stream: true`), documented as the route's text/event-stream -------

CHUNK_STREAM_DESCRIPTION = (
    "With `stream: true`: Server-Sent Events, one `data: <json>` line and a blank line per "
    "event. Each event is an OpenAI `chat.completion.chunk` (`id`, `object`, `created`, "
    "`model`, the gateway's `provider`, `choices: [{index: 0, delta, finish_reason}]`): the "
    "first carries `delta.role` with the first text, then one per upstream piece with "
    "`delta.content`, then one with an empty delta and the `finish_reason`; with "
    "`stream_options.include_usage`, one with `choices: []` and `usage`; the stream ends "
    "with `data: [DONE]`. A fault after the first text ends it with "
    '`data: {"error": {message, type, param, code}}` instead (the SDKs raise it).'
)
CHUNK_STREAM_EXAMPLE = (
    'data: {"id":"chatcmpl-5f0c2a9e41d7b3c8","object":"chat.completion.chunk",'
    '"created":1767225600,"model":"gpt-4o-mini","provider":"openai","choices":[{"index":0,'
    '"delta":{"role":"assistant","content":"The full"},"finish_reason":null}]}\n\n'
    'data: {"id":"chatcmpl-5f0c2a9e41d7b3c8","object":"chat.completion.chunk",'
    '"created":1767225600,"model":"gpt-4o-mini","provider":"openai","choices":[{"index":0,'
    '"delta":{"content":" text is available."},"finish_reason":null}]}\n\n'
    'data: {"id":"chatcmpl-5f0c2a9e41d7b3c8","object":"chat.completion.chunk",'
    '"created":1767225600,"model":"gpt-4o-mini","provider":"openai","choices":[{"index":0,'
    '"delta":{},"finish_reason":"stop"}]}\n\n'
    "data: [DONE]\n\n"
)
