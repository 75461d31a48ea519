"""Upstream HTTP faults from the sandbox's chaos controls: 5xx windows, 429 storms, a hang.

In each, Groq (first in priority) misbehaves and Gemini is healthy, so every request must
still be answered; the breaker must shield Groq while it fails and close once it is back.
"""

from __future__ import annotations

import pytest

from tests.chaos.invariants import BreakerCase, Expect, trials_bound, verdict
from tests.chaos.scenario import Chaos
from tests.support.sandbox import GROQ_KEYS

pytestmark = pytest.mark.chaos

FAIL_MAX = 5
RESET_S = 1.0


def failover_bound(requests: int, concurrency: int, window_s: float, opens: int = 1) -> int:
    """One successful call per request, plus what a failing upstream may receive: per trip
    fail_max calls and whatever was in flight when it tripped, then one trial per reset."""
    return requests + opens * (FAIL_MAX + concurrency) + trials_bound(RESET_S, window_s)


@pytest.mark.parametrize("status", [500, 503])
async def test_primary_5xx_window(chaos: Chaos, status: int) -> None:
    """Groq answers `status` to everything for 2 s, then recovers on its own."""
    requests, rate, concurrency, window = 220, 40.0, 20, 2.0
    run = await chaos.start()
    recovered: list[float] = []

    async def outage() -> None:
        await run.sandbox.chaos("groq", down_for_s=window, error_status=status)
        recovered.append(run.now() + window)

    await run.gather(
        run.load(requests, rate=rate, concurrency=concurrency),
        run.script((1.0, f"groq {status} for {window:g}s", outage)),
    )
    observation = await run.finish()
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=failover_bound(requests, concurrency, window),
            upstream_why="1 per request + fail_max + in flight + 1 trial/reset",
            breakers=(BreakerCase("groq", RESET_S, recovered_at=recovered[0]),),
        ),
    )


@pytest.mark.parametrize("keys", ["one_key", "all_keys"])
async def test_rate_limit_storm(chaos: Chaos, keys: str) -> None:
    """Groq answers 429 with `retry-after: 2` on one of its three keys, or on all of them,
    for 3 s. A rate-limited key must rest for its Retry-After (not be hammered), the other
    keys or Gemini must serve, and a 429 is no fault of the provider: the breaker stays shut."""
    requests, rate, concurrency, window, retry_after = 200, 40.0, 20, 3.0, 2.0
    limited = ["gsk-sandbox-1"] if keys == "one_key" else list(GROQ_KEYS)
    run = await chaos.start()
    await run.gather(
        run.load(requests, rate=rate, concurrency=concurrency),
        run.script(
            (
                1.0,
                f"groq 429 on {keys} (retry-after {retry_after:g}s)",
                lambda: run.sandbox.chaos(
                    "groq", rate_limited_keys=limited, retry_after=retry_after
                ),
            ),
            (1.0 + window, "groq keys free again", lambda: run.sandbox.clear("groq")),
        ),
    )
    observation = await run.finish()
    storm = int(observation.sandbox_stats["groq"]["by_status"].get("429", 0))
    # Each limited key is tried once per Retry-After period, plus calls already in flight.
    rests = trials_bound(retry_after, window)
    allowed = len(limited) * rests + concurrency
    by_groq = sum(
        o.ok and o.body is not None and o.body["provider"] == "groq" for o in observation.outcomes
    )
    extra = [
        verdict(
            "rest",
            "limited keys rest for Retry-After",
            0 < storm <= allowed,
            f"{storm} calls got 429 <= {allowed} "
            f"({len(limited)} keys x {rests} periods + in flight)",
        ),
        verdict(
            "no-trip",
            "429s do not open the breaker",
            observation.transitions("groq")["open"] == 0,
            f"groq opened {observation.transitions('groq')['open']} times",
        ),
    ]
    if keys == "one_key":
        extra.append(
            verdict(
                "groq-serves",
                "the other keys keep Groq serving",
                by_groq == requests,
                f"{by_groq}/{requests} answered by groq",
            )
        )
    chaos.conclude(
        run,
        observation,
        Expect(
            # A 429 moves on to Groq's next model (another key), then to Gemini.
            max_upstream=requests + allowed,
            upstream_why="1 per request + the 429s allowed",
            extra=extra,
        ),
    )


async def test_primary_hang(chaos: Chaos) -> None:
    """Groq accepts connections and never answers for 2.5 s. Warmed up on fast answers, the
    adaptive timeout (p95 x 1.5, clamped to AI_TIMEOUT_MIN_S) cuts each call at 0.3 s, long
    before GROQ_TIMEOUT_S (5 s); the breaker opens and Gemini answers."""
    warm, requests, rate, concurrency, window, floor = 40, 180, 30.0, 20, 2.5, 0.3
    run = await chaos.start({"AI_TIMEOUT_MIN_SAMPLES": "10", "AI_TIMEOUT_MIN_S": str(floor)})
    await run.load(warm, rate=40.0, concurrency=concurrency, phase="warm-up")
    recovered: list[float] = []

    async def heal() -> None:
        await run.sandbox.clear("groq")
        recovered.append(run.now())

    start = run.now()
    await run.gather(
        run.load(requests, rate=rate, concurrency=concurrency),
        run.script(
            (start + 1.0, "groq hangs", lambda: run.sandbox.chaos("groq", hang=True)),
            (start + 1.0 + window, "groq answers again", heal),
        ),
    )
    observation = await run.finish()
    learned = [s.timeout_s.get("groq", 0.0) for s in observation.samples if s.t < start + 1.0]
    cuts = [
        a["latency_ms"] / 1000
        for o in observation.outcomes
        for a in o.attempts
        if a["provider"] == "groq" and a["error_type"] == "timeout"
    ]
    extra = [
        verdict(
            "adaptive",
            "the timeout was learned, not the static one",
            bool(learned) and learned[-1] == pytest.approx(floor),
            f"groq timeout before the hang {learned[-1] if learned else None}s (floor {floor}s,"
            " static 5s)",
        ),
        verdict(
            "cut",
            "hung calls are cut at the adaptive timeout",
            bool(cuts) and max(cuts) < floor + 0.2,
            f"{len(cuts)} calls cut, longest {max(cuts, default=0):.2f}s",
        ),
    ]
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=warm + failover_bound(requests, concurrency, window),
            upstream_why="1 per request + fail_max + in flight + 1 trial/reset",
            breakers=(BreakerCase("groq", RESET_S, recovered_at=recovered[0], trial_s=floor),),
            extra=extra,
        ),
    )
