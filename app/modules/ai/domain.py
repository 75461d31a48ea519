"""The gateway's own data, independent of HTTP and of any provider's wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from app.core.settings import ProviderName, RoutingStrategy


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class Intent(StrEnum):
    ANALYSIS = "analysis"
    DRAFT = "draft"
    VALIDATION = "validation"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ResponseSchema:
    """The JSON Schema an answer must fit (OpenAI's `response_format: json_schema`)."""

    name: str
    schema: dict[str, Any]
    strict: bool | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """One caller request, already validated against the service's limits."""

    messages: tuple[ChatMessage, ...]
    model: str = "fast"
    temperature: float | None = None
    max_tokens: int | None = None
    json_mode: bool = False
    intent: Intent | None = None
    strategy: RoutingStrategy | None = None
    # Ask for the response cache even when temperature is not 0.
    cache: bool = False
    # Structured output: the answer is JSON that fits this schema (checked before return).
    response_schema: ResponseSchema | None = None


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who asked, for the ledger and per-caller budgets; never sent upstream."""

    caller: str = "anonymous"
    service_name: str = "api"
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderReply:
    """What an adapter read from its upstream: the answer and the upstream's own token counts."""

    content: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None


class AttemptOutcome(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One step of the route a request took; `error_type` is a FailureKind or a skip reason."""

    provider: ProviderName
    model: str | None
    outcome: AttemptOutcome
    error_type: str | None = None
    latency_ms: float = 0.0
    status_code: int | None = None
    endpoint: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class AIResponse:
    content: str
    provider: ProviderName
    model: str
    usage: Usage
    cost_usd: float
    latency_ms: float
    attempts: tuple[Attempt, ...] = field(default=())
    cached: bool = False
    finish_reason: str | None = None
