"""Container overrides tests may pass to create_app: only time, never our own logic."""

from __future__ import annotations

from dishka import Provider, Scope

from app.core.clock import Clock, ManualClock


def manual_clock(clock: ManualClock) -> Provider:
    """Replace the system clock, so breaker cooldowns and windows move when the test says."""
    provider = Provider(scope=Scope.APP)
    provider.provide(lambda: clock, provides=Clock, override=True)
    return provider
