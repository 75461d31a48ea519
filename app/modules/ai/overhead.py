"""`ai_gateway_overhead_seconds`, measured where it is true.

The clock starts when the request reaches the app's middleware stack and stops when its
response has been sent, so authentication, body parsing, DI, serialisation and the send are
counted, not only the service call. Time spent waiting on upstreams (or on an identical call
in flight, which is an upstream wait shared) is reported by the service through a context
variable and subtracted.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from app.core.histograms import LocalHistogram

# The paths whose requests call upstreams: the two completion endpoints.
COMPLETION_PATHS = frozenset({"/v1/ai/completions", "/v1/chat/completions"})

_upstream_wait: ContextVar[list[float] | None] = ContextVar("ai_upstream_wait", default=None)


def add_upstream_wait(seconds: float) -> None:
    """Count `seconds` as waiting on upstreams for the request being served, if any."""
    box = _upstream_wait.get()
    if box is not None:
        box[0] += seconds


class OverheadRecorder:
    """Where the middleware records; bound to the app's histogram once the container exists
    (the middleware stack is built before the container can be awaited)."""

    def __init__(self) -> None:
        self.histogram: LocalHistogram | None = None

    def record(self, seconds: float) -> None:
        if self.histogram is not None:
            self.histogram.record(seconds)


class OverheadMiddleware:
    """A plain ASGI middleware: a Litestar AbstractMiddleware costs more than what it measures."""

    def __init__(self, app: ASGIApp, recorder: OverheadRecorder) -> None:
        self._app = app
        self._recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] not in COMPLETION_PATHS:
            await self._app(scope, receive, send)
            return
        box = [0.0]
        token = _upstream_wait.set(box)
        started = time.perf_counter()
        try:
            await self._app(scope, receive, send)
        finally:
            _upstream_wait.reset(token)
            self._recorder.record(max(0.0, time.perf_counter() - started - box[0]))
