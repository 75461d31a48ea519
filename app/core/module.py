"""What every module may depend on: settings (from context), the clock."""

from __future__ import annotations

from dishka import Provider, Scope, from_context, provide

from app.core.clock import Clock, SystemClock
from app.core.settings import Settings


class CoreModule(Provider):
    scope = Scope.APP

    settings = from_context(provides=Settings, scope=Scope.APP)

    @provide
    def clock(self) -> Clock:
        return SystemClock()
