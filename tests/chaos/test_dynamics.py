"""Faults that move over time: a flapping provider, a brownout that creeps up, and every
provider down at once."""

from __future__ import annotations

import math

import httpx
import pytest

from tests.chaos.harness import PROVIDERS, Outcome
from tests.chaos.invariants import BreakerCase, Expect, trials_bound, verdict
from tests.chaos.scenario import SOAK, Chaos

pytestmark = pytest.mark.chaos

FAIL_MAX = 5
RESET_S = 1.0


def _served_by(outcomes: list[Outcome], provider: str) -> int:
    return sum(o.ok and o.body is not None and o.body["provider"] == provider for o in outcomes)


async def test_flapping_provider(chaos: Chaos) -> None:
    """Groq is down 1 s, up 1 s, three times. The breaker follows the flaps without
    thrashing: it opens at most once per down phase plus once per failed trial inside it,
    closes at most once per up phase, and Gemini answers whatever Groq cannot."""
    downs, down_s, period = 3, 1.0, 2.0
    rate, concurrency, first = 40.0, 20, 0.5
    last_recovery = first + (downs - 1) * period + down_s
    requests = int((last_recovery + 2.0) * rate)
    run = await chaos.start()
    steps = []
    recovered: list[float] = []
    for i in range(downs):

        async def down() -> None:
            await run.sandbox.chaos("groq", down_for_s=down_s, error_status=503)
            recovered.append(run.now() + down_s)

        steps.append((first + i * period, f"groq down {down_s:g}s", down))
    await run.gather(run.load(requests, rate=rate, concurrency=concurrency), run.script(*steps))
    observation = await run.finish()
    moves = observation.transitions("groq")
    max_opens = downs * (1 + math.ceil(down_s / RESET_S))
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=requests
            + downs * (FAIL_MAX + concurrency)
            + trials_bound(RESET_S, downs * down_s),
            upstream_why="1 per request + per flap fail_max + in flight + 1 trial/reset",
            breakers=(BreakerCase("groq", RESET_S, recovered_at=recovered[-1]),),
            extra=[
                verdict(
                    "no-thrash",
                    "the breaker does not thrash",
                    moves["open"] <= max_opens and moves["closed"] <= downs,
                    f"{moves['open']} opens <= {max_opens} (1 + failed trials per down phase), "
                    f"{moves['closed']} closes <= {downs} (1 per up phase)",
                ),
            ],
        ),
    )


# Groq's latency creeps up 30 % a step: always under the 1.5 x p95 the adaptive timeout
# allows, so it can follow, until it passes AI_TIMEOUT_MAX_S and the fallback takes over.
CREEP_MS = [110 * 1.3**i for i in range(11)]  # 110 ms ... 1.5 s
TIMEOUT_MAX_S = 1.0


async def test_slow_brownout(chaos: Chaos) -> None:
    """Groq's latency creeps from 110 ms to 1.5 s (over 9 s; a minute with CHAOS_SOAK=1).
    The adaptive timeout follows it up, so Groq keeps answering while it is merely slow;
    once it is slower than AI_TIMEOUT_MAX_S (1 s, below the static GROQ_TIMEOUT_S of 5 s)
    the timeout cuts it, the breaker opens and Gemini takes over for good: no Groq call may
    outlive the ceiling, and no request its deadline."""
    step_s = 5.5 if SOAK else 0.8
    warm_s, tail_s, rate, concurrency = 1.0, 2.5, 25.0, 60
    requests = int((warm_s + len(CREEP_MS) * step_s + tail_s) * rate)
    run = await chaos.start(
        {
            "AI_TIMEOUT_MIN_SAMPLES": "10",
            "AI_TIMEOUT_MIN_S": "0.25",
            "AI_TIMEOUT_MAX_S": str(TIMEOUT_MAX_S),
            "AI_LATENCY_WINDOW_SAMPLES": "20",
        }
    )
    crossed: list[float] = []  # when the latency first passed the ceiling
    followable: list[float] = []  # until when 1.5 x the latency stays under the ceiling

    def step(ms: float) -> object:
        async def creep() -> None:
            await run.sandbox.patch("groq", latency_ms=round(ms))
            if ms / 1000 > TIMEOUT_MAX_S and not crossed:
                crossed.append(run.now())
            if ms / 1000 * 1.5 <= TIMEOUT_MAX_S:
                followable.append(run.now() + step_s)

        return creep

    await run.gather(
        run.load(requests, rate=rate, concurrency=concurrency),
        run.script(
            *(
                (warm_s + i * step_s, f"groq latency {ms:.0f} ms", step(ms))
                for i, ms in enumerate(CREEP_MS)
            )
        ),
    )
    observation = await run.finish()
    timeouts = [s.timeout_s.get("groq", 0.0) for s in observation.samples]
    early = [o for o in observation.outcomes if o.started < followable[-1]]
    late = [o for o in observation.outcomes if o.started > crossed[0] + 2 * RESET_S]
    by_groq, by_gemini = _served_by(early, "groq"), _served_by(late, "gemini")
    longest = max(
        (
            a["latency_ms"] / 1000
            for o in observation.outcomes
            for a in o.attempts
            if a["provider"] == "groq"
        ),
        default=0.0,
    )
    highest = max(timeouts, default=0.0)
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=requests
            + FAIL_MAX
            + concurrency
            + trials_bound(RESET_S, observation.duration_s - crossed[0]),
            upstream_why="1 per request + fail_max + in flight + 1 trial/reset",
            breakers=(BreakerCase("groq", RESET_S),),
            extra=[
                verdict(
                    "adapts",
                    "the timeout rises with the latency",
                    min(timeouts, default=1) <= 0.3 and highest >= 0.75,
                    f"groq timeout from {min(timeouts, default=0):.2f}s "
                    f"to {max(timeouts, default=0):.2f}s",
                ),
                verdict(
                    "follows",
                    "a slow but working Groq keeps answering",
                    by_groq >= 0.95 * len(early),
                    f"{by_groq}/{len(early)} answered by groq while 1.5 x latency <= "
                    f"{TIMEOUT_MAX_S:g}s",
                ),
                verdict(
                    "ceiling",
                    "no Groq call outlives AI_TIMEOUT_MAX_S",
                    longest <= TIMEOUT_MAX_S + 0.15 and highest <= TIMEOUT_MAX_S,
                    f"longest groq call {longest:.2f}s, highest groq timeout {highest:.2f}s, "
                    f"ceiling {TIMEOUT_MAX_S:g}s",
                ),
                verdict(
                    "fallback",
                    "past the ceiling Gemini takes over",
                    bool(late) and by_gemini >= 0.9 * len(late),
                    f"{by_gemini}/{len(late)} answered by gemini once groq > {TIMEOUT_MAX_S:g}s",
                ),
            ],
        ),
    )


async def test_every_provider_down(chaos: Chaos) -> None:
    """All four upstreams answer 503 for 3 s. Callers get clean 503 all-providers-failed
    with a Retry-After, fast once the breakers are open, and the upstreams see no retry
    storm: per provider fail_max, what was in flight, one trial per reset and the retry
    budget's few retries of the last provider. Groq answers again once it is back."""
    rate, concurrency, start, window = 40.0, 20, 0.5, 3.0
    requests = int((start + window + 2.0) * rate)
    run = await chaos.start()
    recovered: list[float] = []
    ready: list[int | None] = []

    async def outage() -> None:
        for name in PROVIDERS:
            await run.sandbox.chaos(name, down_for_s=window, error_status=503)
        recovered.append(run.now() + window)

    async def readiness() -> None:
        async with httpx.AsyncClient(base_url=run.service.url, timeout=2, trust_env=False) as c:
            try:
                ready.append((await c.get("/health/ready")).status_code)
            except httpx.HTTPError:
                ready.append(None)

    await run.gather(
        run.load(requests, rate=rate, concurrency=concurrency),
        run.script(
            (start, "every provider 503", outage),
            *((start + at, "readiness read", readiness) for at in (1.0, 1.5, 2.0, 2.5)),
        ),
    )
    observation = await run.finish()
    failed = [o for o in observation.outcomes if o.status == 503]
    waits = sorted({int(o.retry_after or 0) for o in failed})
    # Once every breaker is open, nothing is called: the answer is immediate.
    settled = [o for o in failed if o.started > start + 0.5]
    fast = sorted(o.latency_s for o in settled)
    after = [o for o in observation.outcomes if o.started > recovered[0] + RESET_S + 0.5]
    retries = max(3, int(0.2 * requests))
    per_provider = FAIL_MAX + concurrency + trials_bound(RESET_S, window)
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=requests + len(PROVIDERS) * per_provider + retries,
            upstream_why="answers + per provider (fail_max + in flight + trials) + retry budget",
            allowed_errors=frozenset({"all-providers-failed"}),
            min_success=None,
            # Only Groq gets traffic after the recovery; the others' breakers stay open (and
            # are gated) until a request or a health probe takes their trial, and probes run
            # only at start here (AI_HEALTH_PROBE_INTERVAL_S=600).
            breakers=(
                BreakerCase("groq", RESET_S, recovered_at=recovered[0]),
                *(BreakerCase(name, RESET_S) for name in PROVIDERS[1:]),
            ),
            extra=[
                verdict(
                    "retry-after",
                    "503s carry a short Retry-After",
                    bool(failed) and waits[0] >= 1 and waits[-1] <= math.ceil(RESET_S) + 1,
                    f"{len(failed)} x 503, Retry-After values {waits}",
                ),
                verdict(
                    "fast-fail",
                    "open breakers fail fast",
                    bool(fast) and fast[len(fast) // 2] < 0.05,
                    f"median 503 after the trips {fast[len(fast) // 2] * 1000:.0f} ms"
                    if fast
                    else "no 503 after the trips",
                ),
                # Readiness is about this replica, not the upstreams: every replica shares this
                # outage, and taking them all out of the load balancer would turn these fast
                # typed 503s into refused connections. (It used to answer 503 here.)
                verdict(
                    "ready",
                    "/health/ready stays 200 while every provider is down",
                    len(ready) == 4 and all(status == 200 for status in ready),
                    f"/health/ready during the outage: {ready}",
                ),
                verdict(
                    "recovers",
                    "answers again after the outage",
                    bool(after) and all(o.ok for o in after),
                    f"{sum(o.ok for o in after)}/{len(after)} answered after recovery",
                ),
            ],
        ),
    )
