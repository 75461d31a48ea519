"""What the literature module builds: everything lives as long as the app. The fetcher (one
HTTP client for every outbound request of the module, behind the guard) is closed on shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator

from dishka import Provider, Scope, provide

from app.core.clock import Clock
from app.core.settings import LiteratureSettings, Settings
from app.core.telemetry import Telemetry
from app.modules.ai.service import UnifiedAIService
from app.modules.literature.cache import ResultCache
from app.modules.literature.fetcher import SafeFetcher
from app.modules.literature.hostguards import HostGuards, RatePlan
from app.modules.literature.metrics import LiteratureMetrics
from app.modules.literature.publishers import PublisherRegistry
from app.modules.literature.service import FullTextDetectionService, Waterfall
from app.modules.literature.tiers import (
    AIVerificationTier,
    DatabaseTier,
    DirectUrlTier,
    Examiner,
    PmcTier,
    PublisherTier,
    SecondaryLinksTier,
    UnpaywallTier,
)
from app.modules.literature.verification import AIVerifier, ContentVerifier

# Metric labels for outbound requests besides the publisher keys.
_API_LABELS = frozenset({"unpaywall", "doi_resolver"})


class LiteratureModule(Provider):
    scope = Scope.APP

    service = provide(FullTextDetectionService)
    content_verifier = provide(ContentVerifier)

    @provide
    def settings(self, settings: Settings) -> LiteratureSettings:
        return settings.literature

    @provide
    def registry(self) -> PublisherRegistry:
        return PublisherRegistry()

    @provide
    def metrics(self, telemetry: Telemetry, registry: PublisherRegistry) -> LiteratureMetrics:
        return LiteratureMetrics(telemetry.meter, registry.keys | _API_LABELS)

    @provide
    def host_guards(self, settings: LiteratureSettings, clock: Clock) -> HostGuards:
        return HostGuards(settings, clock)

    @provide
    def rate_plan(self, settings: LiteratureSettings, registry: PublisherRegistry) -> RatePlan:
        return RatePlan(settings, registry)

    @provide
    async def fetcher(
        self,
        settings: LiteratureSettings,
        clock: Clock,
        metrics: LiteratureMetrics,
        guards: HostGuards,
        plan: RatePlan,
    ) -> AsyncIterator[SafeFetcher]:
        fetcher = SafeFetcher(settings, clock, metrics, guards, plan)
        yield fetcher
        await fetcher.aclose()

    @provide
    def examiner(
        self, fetcher: SafeFetcher, registry: PublisherRegistry, settings: LiteratureSettings
    ) -> Examiner:
        return Examiner(fetcher, registry, settings)

    @provide
    def ai_verifier(
        self, ai: UnifiedAIService, settings: LiteratureSettings, metrics: LiteratureMetrics
    ) -> AIVerifier:
        return AIVerifier(ai, settings, metrics)

    @provide
    def waterfall(
        self,
        settings: LiteratureSettings,
        examiner: Examiner,
        fetcher: SafeFetcher,
        verifier: AIVerifier,
        clock: Clock,
    ) -> Waterfall:
        """Cheapest first: stored text, known PDF links, PMC, Unpaywall, the publisher's page,
        links found on the way, and last the AI reading the best unsure candidate."""
        return Waterfall(
            (
                DatabaseTier(settings),
                DirectUrlTier(examiner),
                PmcTier(examiner, settings),
                UnpaywallTier(examiner, settings),
                PublisherTier(examiner, settings),
                SecondaryLinksTier(examiner, settings),
                AIVerificationTier(fetcher, verifier, settings, clock),
            )
        )

    @provide
    def cache(self, settings: LiteratureSettings, clock: Clock) -> ResultCache:
        return ResultCache(
            clock, ttl_s=settings.cache_ttl_s, max_entries=settings.cache_max_entries
        )
