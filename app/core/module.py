"""What every module may depend on: settings (from context), the clock, randomness and the
app's own metrics pipeline."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

from dishka import Provider, Scope, from_context, provide
from litestar import Request

from app.core.auth import ANONYMOUS, Caller
from app.core.clock import Clock, SystemClock
from app.core.settings import Settings
from app.core.shared import SharedState
from app.core.telemetry import Telemetry


class CoreModule(Provider):
    scope = Scope.APP

    settings = from_context(provides=Settings, scope=Scope.APP)

    @provide
    def clock(self) -> Clock:
        return SystemClock()

    @provide
    def rng(self) -> random.Random:
        return random.Random()  # noqa: S311 - backoff jitter, not cryptography

    @provide(scope=Scope.REQUEST)
    def caller(self, request: Request) -> Caller:  # type: ignore[type-arg]
        """Set by the auth middleware; anonymous when authentication is disabled."""
        user = request.scope.get("user")
        return user if isinstance(user, Caller) else Caller(ANONYMOUS)

    @provide
    async def telemetry(self, settings: Settings) -> AsyncIterator[Telemetry]:
        telemetry = Telemetry()
        if settings.workers > 1 and settings.worker_index is not None:
            # One of `serve --workers N`: every scrape must hold every worker's counters.
            await telemetry.serve_workers(
                index=settings.worker_index,
                workers=settings.workers,
                port_base=settings.metrics_port_base,
            )
        yield telemetry
        await telemetry.aclose()

    @provide
    async def shared(self, settings: Settings) -> AsyncIterator[SharedState | None]:
        """Redis when REDIS_URL is set; None keeps every guard's state in this process."""
        if settings.redis_url is None:
            yield None
            return
        state = SharedState(
            settings.redis_url,
            timeout_s=settings.redis_timeout_s,
            prefix=settings.redis_key_prefix,
            heartbeat_s=settings.redis_heartbeat_s,
        )
        yield state
        await state.aclose()
