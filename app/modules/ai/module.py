"""What the AI module builds, and for how long: everything here lives as long as the app."""

from __future__ import annotations

from collections.abc import AsyncIterator

from dishka import Provider, Scope, provide

from app.core.clock import Clock
from app.core.settings import ProviderName, Settings
from app.modules.ai.pricing import PriceTable
from app.modules.ai.providers import KeyPool, build_adapter
from app.modules.ai.resilience import GuardedProvider
from app.modules.ai.resilience.guard import ProviderGuards
from app.modules.ai.routing import Router
from app.modules.ai.service import UnifiedAIService
from app.modules.ai.stats import ProviderStats


class AIModule(Provider):
    scope = Scope.APP

    prices = provide(PriceTable)
    service = provide(UnifiedAIService)

    @provide
    async def guards(self, settings: Settings, clock: Clock) -> AsyncIterator[ProviderGuards]:
        """One guarded adapter, with its own HTTP client, per configured provider."""
        guards = ProviderGuards()
        for name in ProviderName:
            section = settings.provider(name)
            if not section.configured:
                continue
            guards[name] = GuardedProvider(
                build_adapter(name, settings),
                KeyPool(section.all_keys(), clock),
                section,
                clock,
                ProviderStats(clock),
            )
        yield guards
        for guard in guards.values():
            await guard.adapter.aclose()

    @provide
    def router(self, settings: Settings, prices: PriceTable, guards: ProviderGuards) -> Router:
        def latency(name: ProviderName) -> float | None:
            guard = guards.get(name)
            return guard.stats.latency_quantile(0.5) if guard else None

        return Router(settings, prices, latency)
