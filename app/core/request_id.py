"""The request id, and the one middleware that follows a request from its first byte to its
last: id, server span, `http.server.request.duration` and the access log line.

A caller's `X-Request-ID` is kept when it is 1 to `MAX_REQUEST_ID_LENGTH` characters of
`[A-Za-z0-9._:-]`; anything else (empty, too long, CRLF, spaces, non-ASCII) is replaced by a
generated id (32 hex digits), never trimmed or escaped: an id that reaches logs, headers and
the ledger must be safe as it is, and a half-kept id would match nothing the caller has. The
bound is the ledger's `request_id` column (64).

The id is returned on every response (errors, 404s and streams included, since this
middleware wraps Litestar's own exception handling), held in a context variable for the log
lines and error bodies of the request (`error_fields`), and read by the AI service for the
ledger rows (`current_request_id`).

One plain ASGI middleware, outermost, does all of this because each layer of middleware costs
a few microseconds on every request and the gateway's own latency is a measured feature.
"""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from app.core.ids import random_hex

if TYPE_CHECKING:
    from app.core.http_metrics import HttpMetrics
    from app.core.tracing import Tracing

# The ledger's request_id column is VARCHAR(64).
MAX_REQUEST_ID_LENGTH = 64
REQUEST_ID_HEADER = "X-Request-ID"
_HEADER = b"x-request-id"  # ASGI header names arrive lower-cased
_VALID = re.compile(rb"[A-Za-z0-9._:\-]{1,%d}" % MAX_REQUEST_ID_LENGTH)

access_log = logging.getLogger("app.access")


@dataclass(slots=True)
class RequestInfo:
    """What the access line says about one request, filled in as the request goes (the
    service notes the answer; the auth middleware sets the caller in the scope)."""

    request_id: str
    provider: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    cache: str | None = None  # "hit" or "miss" on the completion routes


_current: ContextVar[RequestInfo | None] = ContextVar("gateway_request", default=None)


def accept_request_id(value: bytes | None) -> str:
    """The caller's id when it is safe as it is, else a new one."""
    if value is not None and _VALID.fullmatch(value):
        return value.decode("ascii")
    return random_hex()


def current_request_id() -> str | None:
    """The id of the request being served in this context, if any."""
    info = _current.get()
    return info.request_id if info is not None else None


def error_fields() -> dict[str, str]:
    """The member both error shapes (problem+json and OpenAI's `error`) add, so a caller can
    quote the id from the body alone; empty outside a request."""
    info = _current.get()
    return {"request_id": info.request_id} if info is not None else {}


def note_answer(
    *,
    provider: str,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost_usd: float,
    cached: bool,
) -> None:
    """Record the answer of the request being served, for its access line."""
    info = _current.get()
    if info is None:
        return
    info.provider = provider
    info.model = model
    info.prompt_tokens = prompt_tokens
    info.completion_tokens = completion_tokens
    info.cost_usd = cost_usd
    info.cache = "hit" if cached else "miss"


class RequestMiddleware:
    """Outermost ASGI middleware (wrapped around Litestar's own handler, see `install`)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: HttpMetrics,
        tracing: Tracing | None,
        text_log: bool = False,
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._tracing = tracing
        self._text_log = text_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        await self._http(scope, receive, send)

    async def _http(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        raw: bytes | None = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                raw = value
                break
        info = RequestInfo(accept_request_id(raw))
        header = (_HEADER, info.request_id.encode("ascii"))
        status = 500  # what the caller sees if the app dies before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = _current.set(info)
        span = self._tracing.server_span(scope) if self._tracing is not None else None
        try:
            await self._app(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            route: str | None = scope.get("path_template")
            self._metrics.record(duration, route, scope["method"], status)
            if span is not None:
                span.finish(route, status)
            if access_log.isEnabledFor(logging.INFO):
                self._access_line(scope, info, route, status, duration)
            if span is not None:
                span.detach()
            _current.reset(token)

    def _access_line(
        self, scope: HTTPScope, info: RequestInfo, route: str | None, status: int, duration: float
    ) -> None:
        """One line per request: what was asked, of whom, what it cost; never a prompt, an
        answer or a key (none of them is in `info` or in the scope fields read here)."""
        user = scope.get("user")
        fields: dict[str, Any] = {
            "method": scope["method"],
            "route": route or "unmatched",
            "status": status,
            "caller": getattr(user, "id", None),
            "duration_ms": round(duration * 1000, 3),
        }
        if info.provider is not None:
            fields.update(
                provider=info.provider,
                model=info.model,
                prompt_tokens=info.prompt_tokens,
                completion_tokens=info.completion_tokens,
                cost_usd=info.cost_usd,
                cache=info.cache,
            )
        if self._text_log:
            access_log.info(" ".join(f"{k}={v}" for k, v in fields.items() if v is not None))
        else:
            access_log.info("request", extra=fields)
