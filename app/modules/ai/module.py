"""What the AI module builds, and for how long: everything here lives as long as the app."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable
from functools import partial
from zoneinfo import ZoneInfo

from dishka import Provider, Scope, provide
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.clock import Clock
from app.core.db import make_engine
from app.core.resilience.breaker import AsyncCircuitBreaker
from app.core.resilience.ratelimit import Limiter, make_limiter
from app.core.resilience.shared_breaker import SharedBreakers
from app.core.resilience.shared_limits import SharedLimiter, SharedLimits
from app.core.settings import ProviderName, ProviderSettings, Settings
from app.core.shared import SharedState
from app.core.telemetry import Telemetry
from app.modules.ai.budget import BudgetGuard, BudgetStore
from app.modules.ai.budget_store import RedisBudgets
from app.modules.ai.cache import CacheStore, MemoryStore, RedisStore, ResponseCache
from app.modules.ai.health import HealthService
from app.modules.ai.key_files import KeyFileWatcher
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.models_list import ModelCatalog
from app.modules.ai.pricing import PriceTable
from app.modules.ai.providers import KeyPool, build_adapter
from app.modules.ai.providers.keys import key_id
from app.modules.ai.providers.shared_keys import KeySync
from app.modules.ai.resilience.guard import GuardedProvider, GuardParts, ProviderGuards
from app.modules.ai.resilience.retry import BackoffPolicy, RetryBudget
from app.modules.ai.resilience.timeout import TimeoutPolicy
from app.modules.ai.routing import Router
from app.modules.ai.service import UnifiedAIService
from app.modules.ai.stats import ProviderStats
from app.modules.ai.usage import UsageLedger


class AIModule(Provider):
    scope = Scope.APP

    prices = provide(PriceTable)
    service = provide(UnifiedAIService)
    models = provide(ModelCatalog)

    @provide
    def budget(
        self,
        settings: Settings,
        clock: Clock,
        metrics: AIMetrics,
        shared: SharedState | None,
        ledger: UsageLedger,
    ) -> BudgetStore:
        """In this process (the embedded default), or on Redis when REDIS_URL is set."""
        if shared is None:
            return BudgetGuard(settings, clock, metrics)
        return RedisBudgets(settings, clock, metrics, shared, ledger)

    @provide
    async def engine(self, settings: Settings) -> AsyncIterator[AsyncEngine]:
        engine = make_engine(settings.database_url, busy_timeout_s=settings.database_busy_timeout_s)
        yield engine
        await engine.dispose()

    @provide
    def ledger(
        self, engine: AsyncEngine, settings: Settings, clock: Clock, metrics: AIMetrics
    ) -> UsageLedger:
        return UsageLedger(engine, settings, clock, metrics)

    @provide
    def cache(
        self, settings: Settings, clock: Clock, metrics: AIMetrics, shared: SharedState | None
    ) -> ResponseCache:
        """In this process, or in Redis when REDIS_URL is set (this process's memory then
        serves only while Redis is unreachable)."""
        local = MemoryStore(
            clock, metrics, max_entries=settings.ai_cache_max_entries, ttl_s=settings.ai_cache_ttl_s
        )
        store: CacheStore = local
        if shared is not None:
            store = RedisStore(shared, local, metrics, ttl_s=settings.ai_cache_ttl_s)
        return ResponseCache(
            store, metrics, enabled=settings.ai_cache_enabled, scope=settings.ai_cache_scope
        )

    @provide
    def metrics(self, telemetry: Telemetry, settings: Settings, prices: PriceTable) -> AIMetrics:
        known = set(prices.models())  # the price file is read once, by the table
        for name in ProviderName:
            section = settings.provider(name)
            known.update(section.models_for("fast") + section.models_for("quality"))
        return AIMetrics(telemetry, frozenset(known))

    @provide
    async def guards(
        self,
        settings: Settings,
        clock: Clock,
        rng: random.Random,
        metrics: AIMetrics,
        shared: SharedState | None,
    ) -> AsyncIterator[ProviderGuards]:
        """One guarded adapter, with its own HTTP client, per configured provider. Key
        limits, daily quotas and key state live in this process, or on Redis when
        REDIS_URL is set (then every replica counts against the same numbers)."""
        guards = ProviderGuards()
        tz = ZoneInfo(settings.budget_timezone)
        limits = None if shared is None else SharedLimits(shared, clock, tz)
        sync = None if shared is None else KeySync(shared, clock)
        # (provider, key id, limiter) of every key with a daily quota, for the usage gauge.
        quotas: list[tuple[str, str, Limiter]] = []
        for name in ProviderName:
            section = settings.provider(name)
            if not section.configured:
                continue
            keys = section.all_keys()
            ids = [key_id(key.get_secret_value()) for key in keys]
            limiters: tuple[Limiter, ...]
            if limits is None:
                limiters = tuple(
                    make_limiter(
                        clock,
                        rpm=section.rpm_per_key,
                        tpm=section.tpm_per_key,
                        rpd=section.rpd_per_key,
                        tz=tz,
                    )
                    for _ in keys
                )
            else:
                limiters = tuple(
                    limits.limiter(
                        ("ai", name.value, ident),
                        rpm=section.rpm_per_key,
                        tpm=section.tpm_per_key,
                        rpd=section.rpd_per_key,
                    )
                    for ident in ids
                )
            if section.rpd_per_key:
                quotas.extend(
                    (name.value, ident, lim) for ident, lim in zip(ids, limiters, strict=True)
                )
            parts = GuardParts(
                breaker=AsyncCircuitBreaker(
                    name.value,
                    clock,
                    fail_max=section.breaker_fail_max,
                    reset_timeout_s=section.breaker_reset_timeout_s,
                    on_change=lambda provider, _, new, origin: metrics.breaker_transitions.add(
                        1, {"provider": provider, "to_state": new.name.lower(), "origin": origin}
                    ),
                ),
                timeout=TimeoutPolicy(
                    default_s=section.timeout_s,
                    min_s=settings.ai_timeout_min_s,
                    max_s=settings.ai_timeout_max_s,
                    multiplier=settings.ai_timeout_multiplier,
                    min_samples=settings.ai_timeout_min_samples,
                ),
                backoff=BackoffPolicy(
                    base_s=settings.ai_retry_base_s,
                    cap_s=settings.ai_retry_cap_s,
                    max_retries=settings.ai_retry_max,
                ),
                retry_budget=RetryBudget(
                    clock,
                    ratio=settings.ai_retry_budget_ratio,
                    min_retries=settings.ai_retry_budget_min,
                    window_s=settings.ai_retry_budget_window_s,
                ),
                key_limiters=limiters,
                stats=ProviderStats(
                    clock,
                    max_samples=settings.ai_latency_window_samples,
                    window_s=settings.ai_latency_window_s,
                ),
                pool_wait_s=settings.ai_pool_wait_s,
            )
            pool = (
                KeyPool(keys, clock)
                if sync is None
                else sync.pool(
                    name.value,
                    keys,
                    [lim if isinstance(lim, SharedLimiter) else None for lim in limiters],
                )
            )
            # A key that joins by a reload (app.modules.ai.key_files) gets a limiter made
            # the same way, counted on Redis when it is shared.
            pool.new_limiter = partial(_key_limiter, clock, tz, limits, section, name, quotas)
            guards[name] = GuardedProvider(
                build_adapter(name, settings),
                pool,
                section,
                parts,
                clock=clock,
                rng=rng,
                metrics=metrics,
            )
        metrics.gauge(
            "ai_provider_circuit_breaker_state",
            "",
            "Circuit breaker state per provider: 0 closed, 1 open, 2 half-open",
            lambda: [(float(g.breaker.state), {"provider": n.value}) for n, g in guards.items()],
        )
        metrics.gauge(
            "ai_provider_timeout",
            "s",
            "Current adaptive timeout per provider",
            lambda: [(g.timeout_s(), {"provider": n.value}) for n, g in guards.items()],
        )
        metrics.gauge(
            "ai_provider_key_usage_ratio",
            "1",
            "Requests a key made today over its daily quota (<P>_RPD_PER_KEY; the day in "
            "BUDGET_TIMEZONE), per provider and key id (short hash); keys with a quota only",
            lambda: _usage_ratios(quotas),
        )
        if sync is not None:
            await sync.start()
        yield guards
        if sync is not None:
            await sync.aclose()
        for guard in guards.values():
            await guard.adapter.aclose()

    @provide
    def key_files(self, settings: Settings, guards: ProviderGuards, clock: Clock) -> KeyFileWatcher:
        """Reloads provider keys from their <P>_API_KEY(S)_FILE files (started with the app)."""
        return KeyFileWatcher(settings, guards, clock)

    @provide
    async def shared_breakers(
        self, settings: Settings, clock: Clock, guards: ProviderGuards, shared: SharedState | None
    ) -> AsyncIterator[SharedBreakers | None]:
        """With REDIS_URL the providers' breakers follow the fleet (one opened anywhere is
        open everywhere, one half-open trial in all); without it each process has its own."""
        if shared is None:
            yield None
            return
        breakers = SharedBreakers(shared, clock)
        for name, guard in guards.items():
            # A trial holds the fleet's lease for the longest call it may be: the provider's
            # timeout (or the adaptive ceiling), or a health probe's.
            longest = max(
                settings.provider(name).timeout_s,
                settings.ai_timeout_max_s,
                settings.ai_health_probe_timeout_s,
            )
            breakers.attach(guard.breaker, trial_ttl_s=longest + 1.0)
        await breakers.start()
        yield breakers
        await breakers.aclose()

    @provide
    def health(
        self,
        settings: Settings,
        guards: ProviderGuards,
        clock: Clock,
        metrics: AIMetrics,
        shared: SharedState | None,
        breakers: SharedBreakers | None,
    ) -> HealthService:
        # `breakers` is asked for so the fleet view starts with the app (health is built at
        # start); health itself reads only whether Redis is reachable.
        health = HealthService(settings, guards, clock, shared=shared)
        metrics.gauge(
            "ai_shared_state_up",
            "",
            "1 while Redis (REDIS_URL) answers, 0 while breakers, cache, budgets and limits "
            "fall back to this process's own state; absent without REDIS_URL",
            health.shared_state_up,
        )
        metrics.gauge(
            "ai_provider_health",
            "",
            "Provider health: 1 healthy, 0.5 degraded, 0 unhealthy",
            lambda: [(health.provider(n).status.gauge, {"provider": n.value}) for n in guards],
        )
        metrics.gauge(
            "ai_provider_key_state",
            "{key}",
            "API keys per provider, key id (short hash) and state (active, resting, retired): "
            "1 for the state a key is in, 0 for the others",
            health.key_states,
        )
        return health

    @provide
    def router(self, settings: Settings, prices: PriceTable, guards: ProviderGuards) -> Router:
        def latency(name: ProviderName) -> float | None:
            guard = guards.get(name)
            return guard.stats.latency_quantile(0.5) if guard else None

        return Router(settings, prices, latency)


def _key_limiter(
    clock: Clock,
    tz: ZoneInfo,
    limits: SharedLimits | None,
    section: ProviderSettings,
    name: ProviderName,
    quotas: list[tuple[str, str, Limiter]],
    ident: str,
) -> Limiter:
    """The rate limiter of one key (by its id) of provider `name`, as built at start."""
    limiter: Limiter
    if limits is None:
        limiter = make_limiter(
            clock, rpm=section.rpm_per_key, tpm=section.tpm_per_key, rpd=section.rpd_per_key, tz=tz
        )
    else:
        limiter = limits.limiter(
            ("ai", name.value, ident),
            rpm=section.rpm_per_key,
            tpm=section.tpm_per_key,
            rpd=section.rpd_per_key,
        )
    if section.rpd_per_key:
        quotas.append((name.value, ident, limiter))
    return limiter


def _usage_ratios(
    quotas: list[tuple[str, str, Limiter]],
) -> Iterable[tuple[float, dict[str, str]]]:
    for provider, ident, limiter in quotas:
        usage = limiter.quota_usage()
        if usage is not None:
            used, quota = usage
            yield used / quota, {"provider": provider, "key_id": ident}
