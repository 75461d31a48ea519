"""Bad answers and broken connections: Groq is reached through the fault proxy, so transport
faults happen on a real socket between the gateway and the upstream; bad bodies come from the
sandbox. Gemini stays healthy, so every request must still be answered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.chaos.harness import ChaosRun
from tests.chaos.invariants import BreakerCase, Expect, trials_bound, verdict
from tests.chaos.scenario import Chaos

pytestmark = pytest.mark.chaos

FAIL_MAX = 5
RESET_S = 1.0
# A fixed timeout (the adaptive one never gets enough samples): what cuts slow answers here.
GROQ_TIMEOUT_S = 0.5
STATIC_TIMEOUT = {"GROQ_TIMEOUT_S": str(GROQ_TIMEOUT_S), "AI_TIMEOUT_MIN_SAMPLES": "100000"}
REQUESTS, RATE, CONCURRENCY, START, WINDOW = 160, 40.0, 20, 0.6, 1.2

Switch = Callable[[ChaosRun], Awaitable[None] | None]


def _proxy(**faults: Any) -> Switch:
    def switch(run: ChaosRun) -> None:
        run.proxies["groq"].set(**faults)

    return switch


def _sandbox(**config: Any) -> Switch:
    def switch(run: ChaosRun) -> Awaitable[None]:
        return run.sandbox.chaos("groq", **config)

    return switch


def _heal(run: ChaosRun) -> Awaitable[None]:
    run.proxies["groq"].clear()
    return run.sandbox.clear("groq")


# name -> (fault, the failure kind the gateway must classify it as)
BAD_RESPONSES: dict[str, tuple[Switch, str]] = {
    "slow_first_byte": (_proxy(first_byte_delay_s=3.0), "timeout"),
    "slow_body": (_proxy(bandwidth_bps=100), "timeout"),
    "truncated_body": (_proxy(truncate_response=True), "connection"),
    "malformed_json": (_sandbox(malformed=True), "bad_response"),
    "wrong_content_type": (_sandbox(wrong_content_type=True), "bad_response"),
    "empty_choices": (_sandbox(empty=True), "bad_response"),
}

CONNECTION_FAULTS: dict[str, tuple[Switch, str]] = {
    "refused": (_proxy(refuse=True), "connection"),
    "reset": (_proxy(reset_on_request=True), "connection"),
    "reset_mid_response": (_proxy(reset_mid_response=True), "connection"),
    "blackhole": (_proxy(blackhole=True), "timeout"),
}


def _bound() -> int:
    return REQUESTS + FAIL_MAX + CONCURRENCY + trials_bound(RESET_S, WINDOW)


async def _fault_window(chaos: Chaos, name: str, switch: Switch, kind: str, **start: Any) -> None:
    """Groq suffers `switch` from START for WINDOW seconds under steady load, then heals."""
    run = await chaos.start(STATIC_TIMEOUT, proxied=("groq",), **start)
    recovered: list[float] = []

    async def heal() -> None:
        await _heal(run)
        recovered.append(run.now())

    async def inject() -> None:
        result = switch(run)
        if result is not None:
            await result

    await run.gather(
        run.load(REQUESTS, rate=RATE, concurrency=CONCURRENCY),
        run.script((START, f"groq {name}", inject), (START + WINDOW, "groq healed", heal)),
    )
    observation = await run.finish()
    kinds = {
        a["error_type"]
        for o in observation.outcomes
        for a in o.attempts
        if a["provider"] == "groq" and a["outcome"] == "error"
    }
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=_bound(),
            upstream_why="1 per request + fail_max + in flight + 1 trial/reset",
            breakers=(
                BreakerCase(
                    "groq",
                    RESET_S,
                    recovered_at=recovered[0],
                    # A trial straddling the recovery may run its whole timeout.
                    trial_s=GROQ_TIMEOUT_S if kind == "timeout" else 0.2,
                ),
            ),
            extra=[
                verdict(
                    "kind",
                    "classified as the right failure",
                    kinds == {kind},
                    f"groq failures classified {sorted(kinds)}, expected [{kind!r}]",
                )
            ],
        ),
    )


@pytest.mark.parametrize("fault", list(BAD_RESPONSES))
async def test_bad_response(chaos: Chaos, fault: str) -> None:
    """A slow first byte or body is cut by the timeout; a truncated, malformed, HTML or empty
    body is a provider fault: the request fails over to Gemini and the breaker counts it."""
    switch, kind = BAD_RESPONSES[fault]
    await _fault_window(chaos, fault, switch, kind)


@pytest.mark.parametrize("fault", list(CONNECTION_FAULTS))
async def test_connection_fault(chaos: Chaos, fault: str) -> None:
    """Refused, reset before or in the middle of a response, or black-holed: the gateway
    fails over at once (or at the timeout for the black hole) and recovers when Groq does.
    Refused connections never reach any listener, so for them the gateway's own count of
    attempts stands in for the edge's."""
    switch, kind = CONNECTION_FAULTS[fault]
    blind = ("groq",) if fault == "refused" else ()
    await _fault_window(chaos, fault, switch, kind, edge_blind=blind)


async def test_unresolvable_host(chaos: Chaos) -> None:
    """Groq's host name never resolves (RFC 6761 `.invalid`: the local resolver answers
    NXDOMAIN without a query leaving the machine). Each try must fail fast as a connection
    error, the breaker must open, and Gemini must answer everything."""
    requests = 160
    port = chaos.sandbox.base_url.rsplit(":", 1)[1]
    run = await chaos.start(
        {"GROQ_BASE_URL": f"http://groq.chaos.invalid:{port}/groq/openai/v1"},
        edge_blind=("groq",),
    )
    await run.load(requests, rate=RATE, concurrency=CONCURRENCY)
    observation = await run.finish()
    failures = [
        a
        for o in observation.outcomes
        for a in o.attempts
        if a["provider"] == "groq" and a["outcome"] == "error"
    ]
    slowest = max((a["latency_ms"] for a in failures), default=0.0)
    window = observation.duration_s
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=requests + FAIL_MAX + CONCURRENCY + trials_bound(RESET_S, window),
            upstream_why="1 per request + fail_max + in flight + 1 trial/reset",
            breakers=(BreakerCase("groq", RESET_S),),
            extra=[
                verdict(
                    "kind",
                    "classified as the right failure",
                    bool(failures) and {a["error_type"] for a in failures} == {"connection"},
                    f"groq failures {sorted({a['error_type'] for a in failures})}",
                ),
                verdict(
                    "fast",
                    "resolution fails fast",
                    slowest < 500,
                    f"slowest failed lookup {slowest:.0f} ms",
                ),
            ],
        ),
    )
