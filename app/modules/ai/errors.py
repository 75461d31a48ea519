"""How provider calls fail, and what the caller sees when they all do.

ProviderError (internal, raised by adapters, never shown as-is)
    kind: FailureKind  rate_limited | timeout | upstream_error | connection |
                       bad_response | auth | bad_request | not_found |
                       caller_deadline (the caller's own deadline cut the call: no verdict)
GatewayError (app.core.errors)
├── UnknownModel (400)            alias or model name we cannot route (404 model_not_found
│   │                             on the OpenAI route, as OpenAI answers it)
│   └── InvalidModelName (400)    a model name outside the strict name rule (it would reach
│                                 an upstream URL path); nothing is sent
├── ContextLengthExceeded (400)   the prompt is longer than AI_MAX_PROMPT_CHARS
├── UnsupportedParameter (400)    a request field the gateway refuses (`tools`, `stream`
│                                 with a JSON schema); names the field
├── ModelNotFound (404)           the pinned model does not exist at its provider
├── UnpricedModel (404)           a paid provider's model missing from the price table, refused
│                                 before any upstream call (AI_ALLOW_UNPRICED_MODELS=false); on
│                                 the OpenAI route: invalid_request_error / model_not_found
├── UpstreamRejected (400)        a provider refused the request itself (bad_request)
├── BudgetExceeded (429)          every provider that could answer is over a daily budget
├── AllProvidersFailed (503)      every provider failed or was skipped; lists reasons
├── LedgerUnavailable (503)       the usage ledger's database cannot be read now (locked,
│                                 unreachable); with Retry-After
└── DeadlineExceeded (504)        the request's overall deadline ran out first
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from app.core.errors import (
    GatewayError,
    GatewayTimeout,
    InvalidRequest,
    RateLimitExceeded,
    ServiceUnavailable,
)


class FailureKind(StrEnum):
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    UPSTREAM_ERROR = "upstream_error"
    CONNECTION = "connection"
    BAD_RESPONSE = "bad_response"
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    # The call was cut by the caller's own deadline, shorter than the provider's timeout:
    # it says nothing about the provider (no breaker verdict, no latency sample).
    CALLER_DEADLINE = "caller_deadline"

    @property
    def moves_on(self) -> bool:
        """Worth trying the next model or provider: the fault is theirs, not the request's."""
        return self not in (FailureKind.AUTH, FailureKind.BAD_REQUEST, FailureKind.CALLER_DEADLINE)

    @property
    def retryable(self) -> bool:
        """Worth trying the same upstream again after a pause."""
        return self in (
            FailureKind.RATE_LIMITED,
            FailureKind.TIMEOUT,
            FailureKind.UPSTREAM_ERROR,
            FailureKind.CONNECTION,
            FailureKind.BAD_RESPONSE,
        )

    @property
    def is_provider_fault(self) -> bool:
        """Counts against the provider's health and circuit breaker."""
        return self in (
            FailureKind.TIMEOUT,
            FailureKind.UPSTREAM_ERROR,
            FailureKind.CONNECTION,
            FailureKind.BAD_RESPONSE,
        )


class ProviderError(Exception):
    """A classified failure of one upstream call. `message` is ours, never the upstream body."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status_code: int | None = None,
        retry_after_s: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        self.code = code


class UnknownModel(InvalidRequest):
    slug = "unknown-model"
    title = "Unknown model"


class InvalidModelName(UnknownModel):
    """The name could never be routed safely: it would reach an upstream URL path."""

    slug = "invalid-model-name"
    title = "Invalid model name"
    openai_error: ClassVar[dict[str, str]] = {"param": "model"}


class ContextLengthExceeded(InvalidRequest):
    """The prompt is longer than the gateway accepts (OpenAI's context_length_exceeded)."""

    slug = "context-length-exceeded"
    title = "Prompt too long"


class UnsupportedParameter(InvalidRequest):
    """A request field the gateway will not honour: refused rather than silently dropped,
    so a client that relies on it learns at once. OpenAI's `unsupported_parameter`."""

    slug = "unsupported-parameter"
    title = "Unsupported parameter"

    def __init__(self, detail: str, *, param: str) -> None:
        super().__init__(detail)
        self.openai_error = {"param": param}


class ModelNotFound(GatewayError):
    status = 404
    slug = "model-not-found"
    title = "Model not found"


class UnpricedModel(GatewayError):
    """A paid provider's model the price table does not price. Booking it at 0 would make it
    free and pass every budget; so it is refused unless AI_ALLOW_UNPRICED_MODELS is set.

    404, as OpenAI answers a model it will not serve, and with OpenAI's own error fields on
    the OpenAI route, so its SDKs raise NotFoundError with code model_not_found."""

    status = 404
    slug = "unpriced-model"
    title = "Model has no price"
    openai_error: ClassVar[dict[str, str]] = {
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


class UpstreamRejected(GatewayError):
    status = 400
    slug = "upstream-rejected"
    title = "The provider rejected the request"

    def __init__(
        self, detail: str, *, upstream_code: str | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(detail, extra=extra)
        # The provider's own code when OpenAI's SDKs know it (a prompt over the model's
        # context), so the caller sees the code it would have seen from OpenAI.
        if upstream_code in OPENAI_UPSTREAM_CODES:
            self.openai_error = {"code": upstream_code, "param": "messages"}


# Upstream error codes passed on as they are on the OpenAI route.
OPENAI_UPSTREAM_CODES = frozenset({"context_length_exceeded"})


class BudgetExceeded(RateLimitExceeded):
    slug = "budget-exceeded"
    title = "Daily budget exceeded"


class AllProvidersFailed(ServiceUnavailable):
    slug = "all-providers-failed"
    title = "All providers failed"


class DeadlineExceeded(GatewayTimeout):
    slug = "deadline-exceeded"
    title = "Deadline exceeded"


class LedgerUnavailable(ServiceUnavailable):
    """The usage ledger's database cannot be read now (SQLite busy, PostgreSQL unreachable).
    A passing condition, not our bug: 503 with Retry-After, never a 500."""

    slug = "ledger-unavailable"
    title = "Usage ledger unavailable"
