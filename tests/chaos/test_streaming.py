"""Streams under a connection cut: `stream: true` requests while the fault proxy resets
OpenAI's answers halfway through (a paid provider first, so every cut has a price). A cut
before the first text fails over like any answer; a cut after it must end the caller's
stream with a typed error event, never a hang or a silent truncation, and every stream, cut
or not, must be booked: one ledger row per upstream call, the cut ones billed for what was
generated, and no money left reserved."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chaos.harness import ChaosRun, Outcome, parse_metrics
from tests.chaos.invariants import Expect, verdict
from tests.chaos.scenario import Chaos

pytestmark = pytest.mark.chaos

REQUESTS, RATE, CONCURRENCY, START, WINDOW = 120, 40.0, 20, 0.5, 1.5
FAIL_MAX = 5


def _body(index: int) -> dict[str, Any]:
    return {
        "model": "fast",
        "messages": [{"role": "user", "content": f"chaos stream request {index}, at length"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _finished(outcome: Outcome) -> bool:
    body = outcome.body or {}
    return bool(body.get("done") and body.get("content") and not body.get("stream_error"))


def _cut(outcome: Outcome) -> bool:
    """Ended by a typed error event after some text: what a mid-stream fault must give."""
    body = outcome.body or {}
    return body.get("stream_error") == "connection" and bool(body.get("content"))


async def test_stream_reset_mid_response(chaos: Chaos) -> None:
    run: ChaosRun = await chaos.start(
        {"AI_PROVIDER_PRIORITY": "openai,gemini"}, proxied=("openai",)
    )

    async def inject() -> None:
        run.proxies["openai"].set(reset_mid_response=True)

    async def heal() -> None:
        run.proxies["openai"].clear()

    await run.gather(
        run.load(
            REQUESTS,
            rate=RATE,
            concurrency=CONCURRENCY,
            body=_body,
            path="/v1/chat/completions",
        ),
        run.script(
            (START, "openai reset mid-response", inject),
            (START + WINDOW, "openai healed", heal),
        ),
    )
    observation = await run.finish()
    streamed = [o for o in observation.outcomes if o.status == 200]
    cut = [o for o in streamed if _cut(o)]
    finished = [o for o in streamed if _finished(o)]
    cut_rows = [
        r
        for r in observation.ledger
        if r["provider"] == "openai" and r["error_type"] == "connection"
    ]
    held = [
        (labels["budget"], value)
        for name, labels, value in parse_metrics(observation.metrics, "ai_budget_reserved_usd")
        if name == "ai_budget_reserved_usd" and value > 0
    ]
    chaos.conclude(
        run,
        observation,
        Expect(
            # Every request is one call, plus a failover call for a cut before the first
            # text; mid-stream cuts are not retried (the caller already has text).
            max_upstream=2 * REQUESTS + CONCURRENCY,
            upstream_why="1 per request + 1 failover each + in flight",
            allowed_errors=frozenset({"all-providers-failed"}),
            min_success=None,
            answered=lambda o: _finished(o) or _cut(o),
            extra=[
                verdict(
                    "cut",
                    "a mid-stream cut ends with a typed error event",
                    bool(cut),
                    f"{len(cut)} streams cut after their first text, each ended by an "
                    f"error event; {len(finished)} finished",
                ),
                verdict(
                    "served",
                    "everything not cut is served in full",
                    len(cut) + len(finished) == len(observation.outcomes),
                    f"{len(finished)} + {len(cut)} of {len(observation.outcomes)}",
                ),
                verdict(
                    "billed",
                    "a cut stream is billed for the text it generated",
                    len(cut_rows) == len(cut) and all(r["cost_usd"] > 0 for r in cut_rows),
                    f"{len(cut_rows)} ledger rows for {len(cut)} cut streams, each with a cost",
                ),
                verdict(
                    "settled",
                    "no money left reserved once every stream has ended",
                    not held,
                    f"reserved at the end: {held}" if held else "0 reserved in every budget",
                ),
            ],
        ),
    )
