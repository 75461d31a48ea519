"""Provider health as data: passive signals from real traffic, plus a free background probe
(model or deployment list, never a paid completion) per provider."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from app.core.clock import Clock
from app.core.resilience.breaker import BreakerState
from app.core.settings import ProviderName, Settings
from app.modules.ai.errors import FailureKind, ProviderError
from app.modules.ai.resilience.guard import GuardedProvider, ProviderGuards
from app.modules.ai.stats import percentile

log = logging.getLogger("app.ai.health")

# Fewer calls than this in the window say nothing about an error rate.
MIN_SAMPLES_FOR_ERROR_RATE = 5


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    NOT_CONFIGURED = "not_configured"

    @property
    def gauge(self) -> float:
        return {"healthy": 1.0, "degraded": 0.5}.get(self.value, 0.0)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    at: datetime
    latency_ms: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    provider: ProviderName
    status: HealthStatus
    reasons: tuple[str, ...] = ()
    p50_ms: float | None = None
    p95_ms: float | None = None
    error_rate: float | None = None
    samples: int = 0
    breaker_state: str | None = None
    timeout_s: float | None = None
    keys_total: int = 0
    keys_available: int = 0
    last_check: ProbeResult | None = None


class HealthService:
    def __init__(self, settings: Settings, guards: ProviderGuards, clock: Clock) -> None:
        self._settings = settings
        self._guards = guards
        self._clock = clock
        self._probes: dict[ProviderName, ProbeResult] = {}
        self._task: asyncio.Task[None] | None = None

    async def probe(self, guard: GuardedProvider) -> ProbeResult:
        """One free call proving the upstream answers and a key is accepted."""
        key = guard.keys.peek()
        started = self._clock.monotonic()
        error: str | None = None
        if key is None:
            error = "no usable key"
        else:
            try:
                async with asyncio.timeout(self._settings.ai_health_probe_timeout_s):
                    await guard.adapter.ping(key)
            except TimeoutError:
                error = FailureKind.TIMEOUT.value
            except ProviderError as exc:
                error = exc.kind.value
        result = ProbeResult(
            ok=error is None,
            at=self._clock.now(),
            latency_ms=(self._clock.monotonic() - started) * 1000,
            error=error,
        )
        previous = self._probes.get(guard.name)
        if previous is not None and previous.ok != result.ok:
            log.warning(
                "health probe provider=%s ok=%s error=%s", guard.name.value, result.ok, error
            )
        self._probes[guard.name] = result
        return result

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(guard) for guard in self._guards.values()))

    async def _run(self) -> None:
        while True:
            try:
                await self.probe_all()
            except Exception:  # a probe bug must not end probing
                log.exception("health probe round failed")
            await asyncio.sleep(self._settings.ai_health_probe_interval_s)

    def start(self) -> None:
        if self._task is None and self._guards:
            self._task = asyncio.create_task(self._run(), name="ai-health-probes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def provider(self, name: ProviderName) -> ProviderHealth:
        guard = self._guards.get(name)
        if guard is None:
            return ProviderHealth(name, HealthStatus.NOT_CONFIGURED, ("no API key configured",))
        latencies = guard.stats.success_latencies()
        samples = len(guard.stats.recent())
        error_rate = guard.stats.error_rate()
        probe = self._probes.get(name)
        status, reasons = self._judge(guard, error_rate, samples, probe)
        return ProviderHealth(
            provider=name,
            status=status,
            reasons=reasons,
            p50_ms=_quantile_ms(latencies, 0.5),
            p95_ms=_quantile_ms(latencies, 0.95),
            error_rate=error_rate,
            samples=samples,
            breaker_state=guard.breaker.state.name.lower(),
            timeout_s=round(guard.timeout_s(), 3),
            keys_total=len(guard.keys),
            keys_available=guard.keys.available(),
            last_check=probe,
        )

    def all(self) -> list[ProviderHealth]:
        return [self.provider(name) for name in ProviderName]

    def ready(self) -> bool:
        """At least one configured provider is not unhealthy."""
        return any(
            self.provider(name).status in (HealthStatus.HEALTHY, HealthStatus.DEGRADED)
            for name in self._guards
        )

    def _judge(
        self,
        guard: GuardedProvider,
        error_rate: float | None,
        samples: int,
        probe: ProbeResult | None,
    ) -> tuple[HealthStatus, tuple[str, ...]]:
        unhealthy: list[str] = []
        degraded: list[str] = []
        breaker = guard.breaker.state
        if breaker is BreakerState.OPEN:
            unhealthy.append("circuit breaker open")
        elif breaker is BreakerState.HALF_OPEN:
            degraded.append("circuit breaker half-open")
        if guard.keys.usable() == 0:
            unhealthy.append("every API key was refused")
        elif guard.keys.available() == 0:
            degraded.append("every API key is resting after a 429")
        if error_rate is not None and samples >= MIN_SAMPLES_FOR_ERROR_RATE:
            if error_rate >= self._settings.ai_health_unhealthy_error_rate:
                unhealthy.append(f"error rate {error_rate:.0%}")
            elif error_rate >= self._settings.ai_health_degraded_error_rate:
                degraded.append(f"error rate {error_rate:.0%}")
        if probe is not None and not probe.ok:
            degraded.append(f"last probe failed ({probe.error})")
        if unhealthy:
            return HealthStatus.UNHEALTHY, tuple(unhealthy + degraded)
        if degraded:
            return HealthStatus.DEGRADED, tuple(degraded)
        return HealthStatus.HEALTHY, ()


def _quantile_ms(sorted_latencies_s: list[float], q: float) -> float | None:
    if not sorted_latencies_s:
        return None
    return round(percentile(sorted_latencies_s, q) * 1000, 3)
