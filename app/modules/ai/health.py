"""Provider health as data: passive signals from real traffic, plus a free background probe
(model or deployment list, never a paid completion) per provider; and readiness, which is
about this replica, not about the providers.

Why the probe does more than report:
- Passive signals only move with traffic. A breaker opened by a one-second blip stays open
  until a call reaches it, and an idle provider gets none, so the probe takes the breaker's
  half-open trial once its open period is over (`AsyncCircuitBreaker.admit_trial`): success
  closes it, a fault re-opens it. An idle provider is then shown healthy again within its
  reset timeout plus one probe interval of the outage's end.
- Failures recorded before the provider proved it recovered (a trial closed its breaker, or a
  successful probe newer than every call) no longer count against it: the error rate is
  computed over the window since that proof.
- A key refused with 401/403 is retired; a provider's refusal can be a blip, so each retired
  key is re-checked with the same free call (by the first probe round at least one interval
  after its refusal, then once per interval) and comes back when it is accepted.

Shared state (Redis, with REDIS_URL) is reported the same way: `shared_state` is `ok`,
`degraded` (unreachable: breakers, cache, budgets and limits run on this process's own
state) or `disabled`; it never touches readiness, since a replica without Redis still serves.

Readiness ("can this replica take a request now?") never looks at providers: an upstream
outage is shared by every replica, and taking them all out of rotation would turn fast typed
503s into connection errors. It is reported here, in /health/ai-providers and in metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from app.core.clock import Clock
from app.core.resilience.breaker import BreakerState, Ticket
from app.core.settings import ProviderName, Settings
from app.core.shared import SharedState
from app.modules.ai.errors import FailureKind, ProviderError
from app.modules.ai.providers.keys import ApiKey, KeyState
from app.modules.ai.resilience.guard import GuardedProvider, ProviderGuards
from app.modules.ai.stats import Sample, percentile
from app.modules.ai.usage import LedgerStatus

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
class KeyHealth:
    """One key as health shows it: its short hash, never the key."""

    id: str
    state: KeyState
    retired_at: datetime | None = None


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
    keys: tuple[KeyHealth, ...] = ()


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether this replica can take a request now, and why not."""

    ready: bool
    problems: tuple[str, ...]
    configured: tuple[str, ...]
    usable: tuple[str, ...]  # informational: providers not unhealthy now
    ledger: LedgerStatus


@dataclass(frozen=True, slots=True)
class _Ping:
    """One free call's outcome: its error kind (None: accepted), and whether it is a
    verdict on the provider (a fault) rather than on the key or nothing at all."""

    error: str | None
    kind: FailureKind | None = None

    @property
    def fault(self) -> bool:
        return self.kind is not None and self.kind.is_provider_fault


SharedStatus = Literal["ok", "degraded", "disabled"]


class HealthService:
    def __init__(
        self,
        settings: Settings,
        guards: ProviderGuards,
        clock: Clock,
        *,
        shared: SharedState | None = None,
    ) -> None:
        self._settings = settings
        self._shared = shared
        self._guards = guards
        self._clock = clock
        self._probes: dict[ProviderName, ProbeResult] = {}
        # Monotonic start of each provider's last successful probe.
        self._probe_ok_at: dict[ProviderName, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def probe(self, guard: GuardedProvider) -> ProbeResult:
        """Re-check the provider's retired keys, then one free call proving the upstream
        answers and a key is accepted; it is the breaker's half-open trial when one is due."""
        await self.recheck_keys(guard)
        key = guard.keys.peek()
        started = self._clock.monotonic()
        if key is None:
            outcome = _Ping("no usable key")
        else:
            # A refusal here is reported, not acted on: only a call retires a key (its 401 is
            # the one a caller would otherwise meet again).
            outcome = await self._ping(guard, key, await guard.breaker.claim_trial())
        result = ProbeResult(
            ok=outcome.error is None,
            at=self._clock.now(),
            latency_ms=(self._clock.monotonic() - started) * 1000,
            error=outcome.error,
        )
        if result.ok:
            self._probe_ok_at[guard.name] = started
        previous = self._probes.get(guard.name)
        if previous is not None and previous.ok != result.ok:
            log.warning(
                "health probe provider=%s ok=%s error=%s",
                guard.name.value,
                result.ok,
                outcome.error,
            )
        self._probes[guard.name] = result
        return result

    async def recheck_keys(self, guard: GuardedProvider) -> None:
        """Probe with each retired key that is due; an accepted one is restored. Outside the
        breaker: the answer is about the key, and an outage only postpones its return."""
        for key in guard.keys.due_for_recheck(self._settings.ai_health_probe_interval_s):
            outcome = await self._ping(guard, key, None)
            if outcome.error is None:
                guard.keys.restore(key)
                log.warning(
                    "api key accepted again provider=%s key_id=%s", guard.name.value, key.id
                )

    async def _ping(self, guard: GuardedProvider, key: ApiKey, ticket: Ticket | None) -> _Ping:
        """One free call with `key`; a breaker `ticket` gets the outcome as its verdict."""
        try:
            async with asyncio.timeout(self._settings.ai_health_probe_timeout_s):
                await guard.adapter.ping(key)
        except TimeoutError:
            outcome = _Ping(FailureKind.TIMEOUT.value, FailureKind.TIMEOUT)
        except ProviderError as exc:
            outcome = _Ping(exc.kind.value, exc.kind)
        except BaseException:
            # Cancelled (shutdown) or a bug: no verdict on the provider.
            if ticket is not None:
                guard.breaker.release(ticket)
            raise
        else:
            outcome = _Ping(None)
        if ticket is not None:
            if outcome.error is None:
                guard.breaker.success(ticket)
            elif outcome.fault:
                guard.breaker.failure(ticket)
            else:
                guard.breaker.release(ticket)
        return outcome

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
        judged = self._judged_samples(guard)
        error_rate = sum(not s.ok for s in judged) / len(judged) if judged else None
        probe = self._probes.get(name)
        status, reasons = self._judge(guard, error_rate, len(judged), probe)
        return ProviderHealth(
            provider=name,
            status=status,
            reasons=reasons,
            p50_ms=_quantile_ms(latencies, 0.5),
            p95_ms=_quantile_ms(latencies, 0.95),
            error_rate=error_rate,
            samples=len(judged),
            breaker_state=guard.breaker.state.name.lower(),
            timeout_s=round(guard.timeout_s(), 3),
            keys_total=len(guard.keys),
            keys_available=guard.keys.available(),
            last_check=probe,
            keys=tuple(
                KeyHealth(key.id, guard.keys.state(key), key.retired_at) for key in guard.keys
            ),
        )

    def all(self) -> list[ProviderHealth]:
        return [self.provider(name) for name in ProviderName]

    def readiness(self, ledger: LedgerStatus) -> Readiness:
        """Ready when the process can take a request: some provider is configured (settings)
        and the ledger writer runs with room in its buffer. Provider health is reported, not
        judged: an upstream outage is every replica's, and removing them all would only turn
        fast typed 503s into refused connections."""
        reports = [h for h in self.all() if h.status is not HealthStatus.NOT_CONFIGURED]
        configured = tuple(h.provider.value for h in reports)
        usable = tuple(h.provider.value for h in reports if h.status is not HealthStatus.UNHEALTHY)
        problems: list[str] = []
        if not configured:
            problems.append("no AI provider is configured (set an API key)")
        if not ledger.writer_alive:
            problems.append("the usage ledger writer is not running")
        elif ledger.buffered_rows >= ledger.max_rows:
            problems.append(
                f"the usage ledger buffer is full ({ledger.buffered_rows} rows, "
                "LEDGER_BUFFER_MAX_ROWS): new rows are dropped"
            )
        return Readiness(not problems, tuple(problems), configured, usable, ledger)

    def shared_state(self) -> SharedStatus:
        """Redis as this replica last saw it (an operation or heartbeat within
        REDIS_HEARTBEAT_S): `disabled` without REDIS_URL."""
        if self._shared is None:
            return "disabled"
        return "ok" if self._shared.up else "degraded"

    def shared_replicas(self) -> int | None:
        """Replicas alive at the last heartbeat that reached Redis (None without Redis)."""
        return None if self._shared is None else self._shared.live_replicas

    def shared_state_up(self) -> Iterable[tuple[float, dict[str, str]]]:
        """The `ai_shared_state_up` gauge: no series without REDIS_URL (nothing to alert on)."""
        if self._shared is not None:
            yield (1.0 if self._shared.up else 0.0), {}

    def key_states(self) -> Iterable[tuple[float, dict[str, str]]]:
        """The key-state gauge: per provider, key id and state, 1 for the key's state and 0
        for the others (every series stays, so a change shows as a change)."""
        for name, guard in self._guards.items():
            for key in guard.keys:
                current = guard.keys.state(key)
                for state in KeyState:
                    labels = {"provider": name.value, "key_id": key.id, "state": state.value}
                    yield (1.0 if state is current else 0.0), labels

    def _judged_samples(self, guard: GuardedProvider) -> list[Sample]:
        """The window's outcomes since the provider last proved it recovered: a trial closed
        its breaker, or a successful probe is newer than every call (an idle provider)."""
        samples = guard.stats.recent()
        since = guard.breaker.closed_at
        probe_ok = self._probe_ok_at.get(guard.name)
        if probe_ok is not None and (not samples or samples[-1].at <= probe_ok):
            since = probe_ok if since is None else max(since, probe_ok)
        if since is None:
            return samples
        return [s for s in samples if s.at >= since]

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
        elif guard.keys.usable() < len(guard.keys):
            degraded.append("an API key was refused")
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
