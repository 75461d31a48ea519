"""Health that tells the truth under a real outage: readiness watched from outside while
every provider fails for a second, then nobody calls."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.chaos.harness import PROVIDERS, ChaosRun
from tests.chaos.invariants import BreakerCase, Expect, trials_bound, verdict
from tests.chaos.scenario import Chaos

pytestmark = pytest.mark.chaos

FAIL_MAX = 3
RESET_S = 1.0
PROBE_INTERVAL_S = 0.5
POLL_S = 0.1
# Polling every 100 ms, the probe's own latency, and the loaded 2-core machine.
HEAL_SLOP_S = 0.5


@dataclass
class HealthWatch:
    """Polls /health/ready and /health/ai-providers every POLL_S, as a load balancer and an
    SRE dashboard would, recording (run time, ready status, provider statuses)."""

    run: ChaosRun
    ready: list[tuple[float, int | None]] = field(default_factory=list)
    providers: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        async with httpx.AsyncClient(
            base_url=self.run.service.url, timeout=2, trust_env=False
        ) as client:
            while True:
                at = self.run.now()
                try:
                    status: int | None = (await client.get("/health/ready")).status_code
                except httpx.HTTPError:
                    status = None
                self.ready.append((at, status))
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    report: dict[str, Any] = (await client.get("/health/ai-providers")).json()
                    self.providers.append(
                        (self.run.now(), {p["provider"]: p["status"] for p in report["providers"]})
                    )
                await asyncio.sleep(POLL_S)


def _completions(stats: dict[str, Any]) -> int:
    return sum(int(stats[p]["completions"]) for p in PROVIDERS)


async def test_one_second_blip_with_readiness_watched(chaos: Chaos) -> None:
    """Every upstream answers 503 (probes too) for 1 s; a few requests meet it and open every
    breaker; then no caller comes. /health/ready, polled every 100 ms, stays 200 throughout:
    the outage is every replica's, so no replica may leave the load balancer over it.
    /health/ai-providers shows the blip (every provider unhealthy), then, with no caller
    traffic, every provider healthy again within reset timeout + one probe interval of the
    outage's end: the probe takes each breaker's half-open trial."""
    start, window, requests = 0.5, 1.0, 6
    run = await chaos.start(
        {
            "AI_HEALTH_PROBE_INTERVAL_S": str(PROBE_INTERVAL_S),
            **{
                f"{prefix}_BREAKER_FAIL_MAX": str(FAIL_MAX)
                for prefix in ("GROQ", "GEMINI", "AZURE_OPENAI", "OPENAI")
            },
        }
    )
    watch = HealthWatch(run)
    watch.start()
    recovered: list[float] = []

    async def outage() -> None:
        for name in PROVIDERS:
            await run.sandbox.chaos(name, down_for_s=window, error_status=503, affect_probes=True)
        recovered.append(run.now() + window)

    async def idle() -> None:
        return None

    await run.script((start, f"every provider 503 for {window:g}s", outage))
    # Three requests meet the outage at every provider (fail_max), the rest are refused fast.
    await run.load(requests, rate=20.0, concurrency=1, phase="blip")
    run.mark("callers stop")
    after_load = _completions(await run.sandbox.stats())
    bound = RESET_S + PROBE_INTERVAL_S + HEAL_SLOP_S
    await run.script((recovered[0] + bound + 1.0, "watch ends", idle))
    end_calls = _completions(await run.sandbox.stats())
    await watch.stop()
    observation = await run.finish()

    not_ready = [(round(t, 2), s) for t, s in watch.ready if s != 200]
    blip_seen = any(
        all(statuses.get(p) == "unhealthy" for p in PROVIDERS) for _, statuses in watch.providers
    )
    healed_at = next(
        (
            t
            for i, (t, _) in enumerate(watch.providers)
            if t >= recovered[0]
            and all(
                all(statuses.get(p) == "healthy" for p in PROVIDERS)
                for _, statuses in watch.providers[i:]
            )
        ),
        None,
    )
    took = None if healed_at is None else healed_at - recovered[0]
    last = watch.providers[-1][1] if watch.providers else {}
    per_provider = FAIL_MAX + 1 + trials_bound(RESET_S, window)
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=len(PROVIDERS) * per_provider + max(3, requests),
            upstream_why="per provider (fail_max + in flight + trials) + the retry budget",
            allowed_errors=frozenset({"all-providers-failed"}),
            min_success=None,
            # No caller after the blip: the probe, one interval apart, is each trial.
            breakers=tuple(
                BreakerCase(name, RESET_S, recovered_at=recovered[0], trial_s=PROBE_INTERVAL_S)
                for name in PROVIDERS
            ),
            extra=[
                verdict(
                    "ready",
                    "/health/ready stays 200 throughout",
                    len(watch.ready) >= 20 and not not_ready,
                    f"{len(watch.ready)} polls, not 200: {not_ready[:5] or 'none'}",
                ),
                verdict(
                    "blip-seen",
                    "/health/ai-providers shows the outage",
                    blip_seen,
                    "every provider unhealthy at some poll"
                    if blip_seen
                    else f"never all unhealthy in {len(watch.providers)} polls",
                ),
                verdict(
                    "heals-idle",
                    "healthy again within reset timeout + one probe interval, no callers",
                    took is not None and took <= bound and end_calls == after_load,
                    f"all healthy {took:.2f}s after recovery (bound {bound:.2f}s = "
                    f"{RESET_S:g} + {PROBE_INTERVAL_S:g} + {HEAL_SLOP_S:g} slop); "
                    f"completions after the callers stopped: {end_calls - after_load}"
                    if took is not None
                    else f"never all healthy for good after recovery; last: {last}",
                ),
            ],
        ),
    )
