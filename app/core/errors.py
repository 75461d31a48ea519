"""The error tree every module raises into, and its one mapping to RFC 9457 problem+json.

    GatewayError                      status, stable `type`, human `detail`
    ├── InvalidRequest (400)          caller input we refuse before any upstream call
    ├── Unauthorized (401)
    ├── PayloadTooLarge (413)
    ├── RateLimitExceeded (429)       carries Retry-After
    ├── ServiceUnavailable (503)      carries Retry-After
    ├── GatewayTimeout (504)
    └── (module errors, e.g. app.modules.ai.errors)

Messages are written for the caller and never carry secrets or prompt text.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

PROBLEM_BASE = "https://literature-gateway.dev/problems/"


class GatewayError(Exception):
    """Root of every error the service turns into an HTTP answer."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        retry_after_s: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.extra = extra or {}

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.slug

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class InvalidRequest(GatewayError):
    status = 400
    slug = "invalid-request"
    title = "Invalid request"


class Unauthorized(GatewayError):
    status = 401
    slug = "unauthorized"
    title = "Unauthorized"


class PayloadTooLarge(GatewayError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class RateLimitExceeded(GatewayError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"


class ServiceUnavailable(GatewayError):
    status = 503
    slug = "service-unavailable"
    title = "Service unavailable"


class GatewayTimeout(GatewayError):
    status = 504
    slug = "deadline-exceeded"
    title = "Deadline exceeded"
