from __future__ import annotations

import aiohttp
import httpx
import pytest

from app.modules.ai.errors import FailureKind
from app.modules.ai.providers.base import (
    classify_status,
    classify_transport_error,
    error_code,
    parse_retry_after,
)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (429, "rate_limit_exceeded", FailureKind.RATE_LIMITED),
        (401, "invalid_api_key", FailureKind.AUTH),
        (403, None, FailureKind.AUTH),
        (404, "model_not_found", FailureKind.NOT_FOUND),
        (400, "model_decommissioned", FailureKind.NOT_FOUND),
        (404, "DeploymentNotFound", FailureKind.NOT_FOUND),
        (400, "context_length_exceeded", FailureKind.BAD_REQUEST),
        (422, None, FailureKind.BAD_REQUEST),
        (408, None, FailureKind.TIMEOUT),
        (500, None, FailureKind.UPSTREAM_ERROR),
        (503, None, FailureKind.UPSTREAM_ERROR),
    ],
)
def test_status_classification(status: int, code: str | None, kind: FailureKind) -> None:
    error = classify_status(status, retry_after_s=None, code=code, message="m")
    assert error.kind is kind
    assert error.status_code == status


def test_which_failures_move_on() -> None:
    movers = {k for k in FailureKind if k.moves_on}
    assert movers == {
        FailureKind.RATE_LIMITED,
        FailureKind.TIMEOUT,
        FailureKind.UPSTREAM_ERROR,
        FailureKind.CONNECTION,
        FailureKind.BAD_RESPONSE,
        FailureKind.NOT_FOUND,
    }


def _wrapped(exc: httpx.HTTPError, cause: BaseException) -> httpx.HTTPError:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        # httpx-aiohttp reports a server disconnect as ConnectTimeout: the cause decides.
        (
            _wrapped(httpx.ConnectTimeout("x"), aiohttp.ServerDisconnectedError()),
            FailureKind.CONNECTION,
        ),
        (_wrapped(httpx.ConnectTimeout("x"), ConnectionResetError()), FailureKind.CONNECTION),
        (_wrapped(httpx.ReadTimeout("x"), aiohttp.SocketTimeoutError()), FailureKind.TIMEOUT),
        (_wrapped(httpx.TimeoutException("x"), TimeoutError()), FailureKind.TIMEOUT),
        (httpx.ReadTimeout("x"), FailureKind.TIMEOUT),
        (httpx.RemoteProtocolError("x"), FailureKind.CONNECTION),
    ],
)
def test_transport_classification(exc: httpx.HTTPError, kind: FailureKind) -> None:
    assert classify_transport_error(exc).kind is kind


def test_retry_after_forms() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": "7"})) == 7.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert parse_retry_after(httpx.Headers({})) is None
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    # An HTTP date in the past means "now".
    assert parse_retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0


def test_error_code_from_each_shape() -> None:
    assert error_code({"error": {"code": "invalid_api_key", "type": "x"}}) == "invalid_api_key"
    assert (
        error_code({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}) == "RESOURCE_EXHAUSTED"
    )
    assert (
        error_code({"error": {"code": None, "type": "invalid_request_error"}})
        == "invalid_request_error"
    )
    assert error_code(["not", "a", "dict"]) is None
