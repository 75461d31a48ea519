"""What every module may depend on: settings (from context), the clock, randomness and the
app's own metrics pipeline."""

from __future__ import annotations

import random
from collections.abc import Iterator

from dishka import Provider, Scope, from_context, provide
from litestar import Request

from app.core.auth import ANONYMOUS, Caller
from app.core.clock import Clock, SystemClock
from app.core.settings import Settings
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
    def telemetry(self) -> Iterator[Telemetry]:
        telemetry = Telemetry()
        yield telemetry
        telemetry.shutdown()
