"""Exception handlers: every error leaves as RFC 9457 problem+json (or, on the
OpenAI-compatible routes, in OpenAI's error shape), never as a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from pydantic import BaseModel, ConfigDict

from app.core.errors import PROBLEM_BASE, GatewayError

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("app.errors")

_HTTP_SLUGS = {
    400: "invalid-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "rate-limited",
}


def _validation_errors(exc: ValidationException) -> list[dict[str, Any]]:
    """Litestar's per-field messages, with the rejected input dropped (it may be a prompt)."""
    errors = exc.extra if isinstance(exc.extra, list) else []
    return [
        {"key": e.get("key"), "message": e.get("message"), "source": e.get("source")}
        for e in errors
        if isinstance(e, dict)
    ]


def _describe(
    request: Request[Any, Any, Any], exc: Exception
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, problem body, headers) for any exception."""
    if isinstance(exc, GatewayError):
        return exc.status, exc.problem(request.url.path), exc.headers()
    if isinstance(exc, ValidationException):
        errors = _validation_errors(exc)
        detail = (
            "; ".join(
                f"{e['key']}: {e['message']}" if e.get("key") else str(e["message"]) for e in errors
            )
            or "the request body is not valid JSON of the expected shape"
        )
        body = {
            "type": PROBLEM_BASE + "invalid-request",
            "title": "Invalid request",
            "status": 400,
            "detail": detail,
            "instance": request.url.path,
            "errors": errors,
        }
        return 400, body, {}
    if isinstance(exc, HTTPException):
        status = exc.status_code
        slug = _HTTP_SLUGS.get(status, "http-error")
        body = {
            "type": PROBLEM_BASE + slug,
            "title": slug.replace("-", " ").capitalize(),
            "status": status,
            "detail": exc.detail,
            "instance": request.url.path,
        }
        return status, body, dict(exc.headers or {})
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    body = {
        "type": PROBLEM_BASE + "internal-error",
        "title": "Internal error",
        "status": 500,
        "detail": "an unexpected error occurred; it has been logged",
        "instance": request.url.path,
    }
    return 500, body, {}


def problem_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status, body, headers = _describe(request, exc)
    return Response(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout",
}


def openai_error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """OpenAI's `{"error": {message, type, param, code}}`, so its SDKs raise the right class."""
    status, body, headers = _describe(request, exc)
    errors = body.get("errors") or []
    param = errors[0].get("key") if errors else None
    error = {
        "message": body["detail"],
        "type": _OPENAI_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        ),
        "param": param,
        "code": body["type"].removeprefix(PROBLEM_BASE),
    }
    # A module error may name OpenAI's own fields for its case (an unpriced model is OpenAI's
    # invalid_request_error / model_not_found on `model`), so the SDKs raise what they would.
    overrides = getattr(exc, "openai_error", None)
    if isinstance(overrides, dict):
        error.update(overrides)
    return Response({"error": error}, status_code=status, headers=headers)


class ProblemOut(BaseModel):
    """RFC 9457 problem details, as every gateway error is sent (documentation model)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorOut(BaseModel):
    """OpenAI's error envelope, used on the OpenAI-compatible routes (documentation model)."""

    error: OpenAIErrorBody


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(ProblemOut, description=_DESCRIPTIONS[status], media_type=PROBLEM_JSON)
        for status in statuses
    }


def openai_error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(OpenAIErrorOut, description=_DESCRIPTIONS[status])
        for status in statuses
    }


_DESCRIPTIONS = {
    400: "The request is invalid; `detail` says what to fix",
    401: "Missing or unknown API key",
    404: "The pinned model does not exist at its provider, or has no price (unpriced-model)",
    413: "The request is too large",
    429: "Too many requests; see Retry-After",
    503: "No provider could answer; see Retry-After",
    504: "The request's deadline passed before a provider answered",
}
