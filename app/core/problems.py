"""Exception handlers: every error leaves as RFC 9457 problem+json (or, on the
OpenAI-compatible routes, in OpenAI's error shape), never as a stack trace."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from pydantic import BaseModel, ConfigDict

from app.core.errors import PROBLEM_BASE, GatewayError
from app.core.request_id import error_fields

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
    """The app-wide handler: problem+json, except on the OpenAI-compatible paths, which answer
    in OpenAI's error shape whatever failed (auth in the middleware, routing, a 405), so an
    OpenAI SDK always reads an error it knows."""
    if is_openai_path(request.scope["path"]):
        return openai_error_response(request, exc)
    status, body, headers = _describe(request, exc)
    body.update(error_fields())  # the request id, as the X-Request-ID header says it
    return Response(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


# The routes that speak OpenAI's API, and so its error shape (see `openai_error_response`).
OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")


def is_openai_path(path: str) -> bool:
    """`path` is one of OPENAI_PATHS, or a model under /v1/models/."""
    path = path.rstrip("/")
    return path in OPENAI_PATHS or path.startswith("/v1/models/")


@dataclass(frozen=True, slots=True)
class OpenAIError:
    """How one of our problem types reads in OpenAI's shape: the `type` and `code` OpenAI
    gives the same case, the `param` it names, and a status when OpenAI's differs from ours
    (an unknown model is 404 there, a 400 on our own API)."""

    type: str
    code: str | None
    param: str | None = None
    status: int | None = None


# Our problem slugs, as OpenAI answers the same case. A slug not listed keeps its status and
# gets its name in snake_case as `code`, with the type of its status (`_OPENAI_TYPES`).
_OPENAI_ERRORS = {
    "unauthorized": OpenAIError("invalid_request_error", "invalid_api_key"),
    "rate-limited": OpenAIError("requests", "rate_limit_exceeded"),
    "budget-exceeded": OpenAIError("insufficient_quota", "insufficient_quota"),
    "unknown-model": OpenAIError("invalid_request_error", "model_not_found", "model", 404),
    "model-not-found": OpenAIError("invalid_request_error", "model_not_found", "model"),
    "invalid-model-name": OpenAIError("invalid_request_error", "invalid_model_name", "model"),
    "context-length-exceeded": OpenAIError(
        "invalid_request_error", "context_length_exceeded", "messages"
    ),
    "invalid-body": OpenAIError("invalid_request_error", "invalid_json"),
}

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "requests",
}


def openai_error_body(
    message: str, *, type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error envelope `{"error": {message, type, param, code}}`: the one place it is
    built (HTTP errors and the error event of a stream), so a field every error carries is
    added here once."""
    error = {"message": message, "type": type, "param": param, "code": code}
    error.update(error_fields())  # the request id, as the X-Request-ID header says it
    return {"error": error}


def openai_error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """OpenAI's `{"error": {message, type, param, code}}`, so its SDKs raise the right class
    (`NotFoundError`, `AuthenticationError`, `RateLimitError`, ...) with OpenAI's `code`."""
    status, body, headers = _describe(request, exc)
    slug = str(body["type"]).removeprefix(PROBLEM_BASE)
    known = _OPENAI_ERRORS.get(slug)
    errors = body.get("errors") or []
    fields: dict[str, Any] = {
        "type": _OPENAI_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        ),
        "param": errors[0].get("key") if errors else None,
        "code": slug.replace("-", "_"),
    }
    if known is not None:
        fields.update(type=known.type, code=known.code, param=known.param or fields["param"])
        status = known.status or status
    # An error may name OpenAI's own fields for its case (an unpriced model is OpenAI's
    # invalid_request_error / model_not_found on `model`; a refused parameter names itself).
    overrides = getattr(exc, "openai_error", None)
    if isinstance(overrides, dict):
        fields.update(overrides)
    return Response(
        openai_error_body(str(body["detail"]), **fields), status_code=status, headers=headers
    )


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
    # Real bodies as examples, not Litestar's random ones ("status": 5277).
    return {
        status: ResponseSpec(
            ProblemOut,
            description=_DESCRIPTIONS[status],
            media_type=PROBLEM_JSON,
            generate_examples=False,
            examples=[Example(summary=_EXAMPLES[status][0], value=_problem_example(status))],
        )
        for status in statuses
    }


def openai_error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(
            OpenAIErrorOut,
            description=_DESCRIPTIONS[status],
            generate_examples=False,
            examples=[Example(summary=_EXAMPLES[status][0], value=_openai_example(status))],
        )
        for status in statuses
    }


# status: (title, problem type slug, detail) of an error the server sends with that status.
_EXAMPLES: dict[int, tuple[str, str, str]] = {
    400: ("Invalid request", "invalid-request", "temperature: must be at most 2"),
    401: ("Unauthorized", "unauthorized", "missing or unknown API key"),
    404: ("Model not found", "model-not-found", "no configured provider serves 'gpt-5-nano'"),
    413: ("Payload too large", "payload-too-large", "the body is over AI_MAX_BODY_BYTES"),
    429: ("Too many requests", "rate-limited", "GATEWAY_CALLER_RPM reached; see Retry-After"),
    503: (
        "All providers failed",
        "all-providers-failed",
        "no provider could answer: groq upstream_5xx, gemini rate_limited",
    ),
    504: ("Deadline exceeded", "deadline-exceeded", "no answer within the request's deadline"),
}


def _problem_example(status: int) -> dict[str, Any]:
    title, slug, detail = _EXAMPLES[status]
    return {"type": f"{PROBLEM_BASE}{slug}", "title": title, "status": status, "detail": detail}


def _openai_example(status: int) -> dict[str, Any]:
    """The same error as `openai_error_response` turns it, from the same tables."""
    _, slug, detail = _EXAMPLES[status]
    known = _OPENAI_ERRORS.get(slug)
    if known is not None:
        return openai_error_body(detail, type=known.type, code=known.code, param=known.param)
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return openai_error_body(detail, type=kind, code=slug.replace("-", "_"))


_DESCRIPTIONS = {
    400: "The request is invalid; `detail` says what to fix",
    401: "Missing or unknown API key",
    404: "The pinned model does not exist at its provider, or has no price (unpriced-model)",
    413: "The request is too large",
    429: "Too many requests; see Retry-After",
    503: "No provider could answer; see Retry-After",
    504: "The request's deadline passed before a provider answered",
}
