"""The contract every upstream adapter fulfils, and the failure classification they share.

Adapters speak one wire format over one httpx client. They raise only `ProviderError`, never
retry, and know nothing of breakers or timeouts: the guard wraps them from outside.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import httpx
import msgspec

from app.core.http import (
    BodyTooLarge,
    UnsafeUpstreamPath,
    UpstreamClient,
    path_segment,
    read_capped,
)
from app.core.settings import ProviderName
from app.modules.ai.domain import CompletionRequest, ProviderReply
from app.modules.ai.errors import FailureKind, ProviderError
from app.modules.ai.providers.keys import ApiKey

if TYPE_CHECKING:
    from app.modules.ai.providers.streaming import ProviderStream

_JSON_DECODER = msgspec.json.Decoder()
_JSON_ENCODER = msgspec.json.Encoder()


class ProviderAdapter(Protocol):
    name: ProviderName
    endpoint: str  # the upstream operation, for the ledger

    async def complete(self, request: CompletionRequest, model: str, key: ApiKey) -> ProviderReply:
        """One completion. Raises ProviderError on any failure."""
        ...

    async def stream(self, request: CompletionRequest, model: str, key: ApiKey) -> ProviderStream:
        """One completion as an opened stream (first text read). Raises ProviderError."""
        ...

    async def ping(self, key: ApiKey) -> None:
        """A free call (model or deployment list) proving the upstream and key work."""
        ...

    async def aclose(self) -> None: ...


def encode_json(payload: Any) -> bytes:
    return _JSON_ENCODER.encode(payload)


def model_segment(model: str) -> str:
    """A model or deployment name as one percent-encoded URL path segment.

    Names are validated at the edge and in settings; this is defence in depth, so that a name
    that slipped through can never climb the path or add a query. A name that cannot be one
    segment is the caller's bad request (never the provider's fault): nothing is sent."""
    try:
        return path_segment(model)
    except UnsafeUpstreamPath as exc:
        raise ProviderError(FailureKind.BAD_REQUEST, "the model name is not a valid name") from exc


def build_request(
    client: UpstreamClient,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str],
    content: bytes | None = None,
    params: Mapping[str, str] | None = None,
) -> httpx.Request:
    """`client.build`, with a path that would leave its endpoint refused as a bad request."""
    try:
        return client.build(method, path, headers=headers, content=content, params=params)
    except UnsafeUpstreamPath as exc:
        raise ProviderError(FailureKind.BAD_REQUEST, "the upstream path is not allowed") from exc


async def send(
    client: UpstreamClient,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str],
    content: bytes | None = None,
    params: Mapping[str, str] | None = None,
) -> tuple[httpx.Response, bytes]:
    """Send one request and read its capped body, turning transport faults into ProviderError."""
    request = build_request(client, method, path, headers=headers, content=content, params=params)
    try:
        response = await client.dispatch(request)
        try:
            body = await read_capped(response)
        finally:
            await response.aclose()
    except BodyTooLarge as exc:
        raise ProviderError(FailureKind.BAD_RESPONSE, "response body too large") from exc
    except httpx.HTTPError as exc:
        raise classify_transport_error(exc) from exc
    except aiohttp.ClientError as exc:  # raised raw while streaming in some aiohttp paths
        raise ProviderError(FailureKind.CONNECTION, type(exc).__name__) from exc
    return response, body


async def send_streaming(
    client: UpstreamClient,
    path: str,
    *,
    headers: Mapping[str, str],
    content: bytes,
    status_error: Callable[[httpx.Response, bytes], ProviderError],
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST and return a 2xx event-stream response with its body unread; the caller closes
    it. Any other answer is read (capped), closed and raised as a classified ProviderError."""
    request = build_request(client, "POST", path, headers=headers, content=content, params=params)
    try:
        response = await client.dispatch(request)
    except httpx.HTTPError as exc:
        raise classify_transport_error(exc) from exc
    except aiohttp.ClientError as exc:
        raise ProviderError(FailureKind.CONNECTION, type(exc).__name__) from exc
    content_type = response.headers.get("content-type", "")
    if response.status_code < 300 and content_type.startswith("text/event-stream"):
        return response
    try:
        body = await read_capped(response)
    except (BodyTooLarge, httpx.HTTPError, aiohttp.ClientError):
        body = b""
    finally:
        await response.aclose()
    if response.status_code >= 300:
        raise status_error(response, body)
    raise ProviderError(
        FailureKind.BAD_RESPONSE,
        f"expected an event stream, got {content_type.split(';')[0] or 'no content type'}",
        status_code=response.status_code,
    )


def classify_transport_error(exc: httpx.HTTPError) -> ProviderError:
    """Timeouts vs broken connections.

    httpx-aiohttp reports any aiohttp connection error (disconnect, reset, refused, DNS) as
    `httpx.ConnectTimeout`, so the underlying cause decides, not the httpx class.
    """
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return ProviderError(FailureKind.TIMEOUT, "upstream timed out")
    if isinstance(cause, aiohttp.ClientError | OSError):
        return ProviderError(FailureKind.CONNECTION, f"connection failed ({type(cause).__name__})")
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(FailureKind.TIMEOUT, "upstream timed out")
    return ProviderError(FailureKind.CONNECTION, f"connection failed ({type(exc).__name__})")


def decode_json(body: bytes) -> Any:
    try:
        return _JSON_DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise ProviderError(FailureKind.BAD_RESPONSE, "malformed JSON body") from exc


def require_json_content_type(response: httpx.Response) -> None:
    content_type = response.headers.get("content-type", "")
    if "json" not in content_type:
        raise ProviderError(
            FailureKind.BAD_RESPONSE,
            f"expected JSON, got content type {content_type.split(';')[0] or 'none'}",
            status_code=response.status_code,
        )


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from `retry-after-ms`, `retry-after` as seconds or as an HTTP date."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify_status(
    status: int,
    *,
    retry_after_s: float | None,
    code: str | None,
    message: str,
) -> ProviderError:
    """Map a non-2xx status (and the upstream's error code) to one FailureKind."""
    if status == 429:
        kind = FailureKind.RATE_LIMITED
    elif status in (401, 403):
        kind = FailureKind.AUTH
    elif status == 404 or code in ("model_not_found", "model_decommissioned", "DeploymentNotFound"):
        kind = FailureKind.NOT_FOUND
    elif status == 408:
        kind = FailureKind.TIMEOUT
    elif status >= 500:
        kind = FailureKind.UPSTREAM_ERROR
    else:
        kind = FailureKind.BAD_REQUEST
    return ProviderError(kind, message, status_code=status, retry_after_s=retry_after_s, code=code)


def error_code(payload: Any) -> str | None:
    """The machine-readable code from an OpenAI-, Azure- or Google-shaped error body."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if not isinstance(error, dict):
        return None
    for field in ("code", "status", "type"):
        value = error.get(field)
        if isinstance(value, str) and value:
            return value
    return None


def nonnegative_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProviderError(FailureKind.BAD_RESPONSE, "usage block has no valid token counts")
    return value
