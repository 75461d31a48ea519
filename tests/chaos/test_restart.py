"""The service killed mid-load and started again on the same ledger database."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.chaos.harness import PROVIDERS, ChaosRun, metric_total, parse_metrics
from tests.chaos.invariants import BreakerCase, Expect, trials_bound, verdict
from tests.chaos.scenario import Chaos
from tests.support.ledger import ledger_rows

pytestmark = pytest.mark.chaos

FAIL_MAX = 5
RESET_S = 1.0


async def _gemini_calls(run: ChaosRun) -> int:
    return int((await run.sandbox.stats())["gemini"]["completions"])


async def _until_calls(run: ChaosRun, count: int, timeout_s: float) -> bool:
    """Wait until Gemini has seen `count` calls; False if it did not within `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await _gemini_calls(run) < count:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_killed_mid_load(chaos: Chaos, sig: signal.Signals) -> None:
    """Groq is failing (its breaker open) and Gemini, slow (1 s), has 20 requests in flight when
    the service gets `sig`; it is then started again on the same database.

    On SIGTERM every request in flight is answered and every ledger row written; on SIGKILL
    the requests in flight are lost and so are the rows still buffered (at most one flush
    interval's worth), never more. Either way the new process rebuilds today's spend from the
    ledger and starts with every breaker closed."""
    before, in_flight, after, rate = 40, 20, 40, 40.0
    run = await chaos.start({"LEDGER_FLUSH_INTERVAL_S": "1.0"})
    await run.sandbox.chaos("groq", error_rate=1.0, error_status=503)
    await run.sandbox.chaos("gemini", latency_ms=1000)
    run.mark("groq failing, gemini slow")
    await run.load(before, rate=rate, concurrency=20, phase="before")
    open_before = run.samples[-1].breaker.get("groq") if run.samples else None

    reached = await _gemini_calls(run)
    inflight = asyncio.create_task(
        run.load(in_flight, rate=1000.0, concurrency=in_flight, phase="in-flight")
    )
    # Signal only once every one of them is inside the service, waiting on Gemini.
    waited = await _until_calls(run, reached + in_flight, timeout_s=5.0)
    code = await run.restart(sig)
    await inflight

    text = await run.metrics()
    states = {
        labels["provider"]: value
        for name, labels, value in parse_metrics(text, "ai_provider_circuit_breaker_state")
        if name == "ai_provider_circuit_breaker_state"
    }
    restored = metric_total(text, "ai_budget_spent_usd", budget="gemini")
    rows = ledger_rows(run.database_url)
    in_ledger = sum(r["cost_usd"] for r in rows if r["provider"] == "gemini")
    answered = sum(
        o.body["cost_usd"]
        for o in run.outcomes
        if o.ok and o.body is not None and o.body["provider"] == "gemini"
    )

    await run.sandbox.clear()
    run.mark("every upstream healthy")
    await run.load(after, rate=rate, concurrency=20, phase="after")
    observation = await run.finish()
    observation.notes.append("breaker transitions shown are the restarted process's")
    killed = sig is signal.SIGKILL
    seen = sum(observation.edge_calls[name] or 0 for name in PROVIDERS)
    lost = seen - len(observation.ledger)
    # SIGKILL may lose the calls in flight and the rows of the last flush interval, no more.
    may_lose = in_flight + int(rate * 1.0) + FAIL_MAX if killed else 0
    expected_code = (-signal.SIGKILL,) if killed else (0, -signal.SIGTERM)
    total = before + in_flight + after
    spend_ok = abs(restored - in_ledger) < 1e-9 and restored > 0
    if not killed:
        spend_ok = spend_ok and abs(in_ledger - answered) < 1e-9
    if not waited:
        observation.notes.append("not every in-flight request had reached gemini at the signal")
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=total + FAIL_MAX + 20 + trials_bound(RESET_S, observation.duration_s),
            upstream_why="1 per request + groq's fail_max + in flight + 1 trial/reset",
            breakers=(BreakerCase("groq", RESET_S),),
            ledger="at_most" if killed else "exact",
            disrupted_phases=frozenset({"in-flight"} if killed else ()),
            extra=[
                verdict(
                    "exit",
                    f"{sig.name} ends the process as expected",
                    code in expected_code,
                    f"exit code {code}",
                ),
                verdict(
                    "closed-at-start",
                    "breakers start closed",
                    open_before == 1 and set(states) == set(PROVIDERS) and not any(states.values()),
                    f"groq breaker before the kill: {open_before}; after the restart: "
                    + ", ".join(f"{k} {v:g}" for k, v in sorted(states.items())),
                ),
                verdict(
                    "loss-bound",
                    "rows lost only from the last flush interval and the calls in flight",
                    0 <= lost <= may_lose,
                    f"{lost} rows lost, at most {may_lose} allowed",
                ),
                verdict(
                    "spend-rebuilt",
                    "today's spend rebuilt from the ledger",
                    spend_ok,
                    f"gemini spend after restart {restored:.6f}, in the ledger {in_ledger:.6f},"
                    f" in answers {answered:.6f}",
                ),
            ],
        ),
    )
