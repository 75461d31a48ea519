"""Load that is no provider's fault: callers with tiny deadlines, and our own connection pool
full of held streams. A shared guard must not count either against the provider (no breaker
trip), while the requests that can be served are served (ARCHITECTURE.md, "blame the right
party")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.chaos.harness import PROVIDERS, Outcome, metric_total
from tests.chaos.invariants import Expect, success_rate, verdict
from tests.chaos.scenario import Chaos

pytestmark = pytest.mark.chaos

# A long answer: under `latency_per_token_ms` a request's max_tokens sets how long it takes.
LONG_ANSWER = "word " * 2000


def _never_tripped(observation: Any, providers: tuple[str, ...]) -> tuple[bool, str]:
    opened = {p: observation.transitions(p)["open"] for p in providers}
    seen_open = sorted(
        {p for s in observation.samples for p, state in s.breaker.items() if state != 0}
    )
    ok = not any(opened.values()) and not seen_open
    return ok, f"opens {opened}; seen not closed: {seen_open or 'none'}"


async def test_caller_deadlines_under_load(chaos: Chaos) -> None:
    """Groq answers in 300 ms. Of 240 requests at 40/s, three in four set `timeout_s` 0.1 s:
    their own deadline, far below Groq's timeout. Those end with a typed 504 (or 503) and are
    no verdict on Groq: its breaker never opens, and every normal request is answered by Groq.
    """
    requests, rate, concurrency, tiny_s, latency_ms = 240, 40.0, 30, 0.1, 300
    run = await chaos.start(
        {"GROQ_RPM_PER_KEY": "100000", "AI_TIMEOUT_MIN_S": "1"},
    )
    await run.sandbox.chaos("groq", latency_ms=latency_ms)

    def body(index: int) -> dict[str, Any]:
        request: dict[str, Any] = {
            "prompt": f"chaos {run.scenario} request {index}",
            "max_tokens": 16,
        }
        if index % 4:
            request["timeout_s"] = tiny_s
        return request

    outcomes = await run.load(requests, rate=rate, concurrency=concurrency, body=body)
    observation = await run.finish()
    tiny = [o for o in outcomes if o.timeout_s is not None]
    normal = [o for o in outcomes if o.timeout_s is None]
    by_groq = sum(o.ok and (o.body or {}).get("provider") == "groq" for o in normal)
    cut = sum(
        a.get("error_type") == "caller_deadline"
        for o in tiny
        for a in o.attempts
        if a.get("provider") == "groq"
    )
    counted = metric_total(
        observation.metrics, "ai_provider_requests_total", provider="groq", outcome="timeout"
    )
    tripped_ok, tripped = _never_tripped(observation, PROVIDERS)
    chaos.conclude(
        run,
        observation,
        Expect(
            # One Groq call per request at most: a caller's deadline ends the request.
            max_upstream=requests,
            upstream_why="1 per request (a caller's deadline is not failed over)",
            allowed_errors=frozenset({"deadline-exceeded", "all-providers-failed"}),
            min_success=None,
            extra=[
                verdict("no-trip", "no breaker opens on callers' deadlines", tripped_ok, tripped),
                verdict(
                    "normal-served",
                    "every normal request is answered by Groq",
                    by_groq == len(normal) and success_rate(normal) == 1.0,
                    f"{by_groq}/{len(normal)} normal requests answered by groq",
                ),
                verdict(
                    "callers-own",
                    "tiny deadlines end as caller_deadline, never as a Groq timeout",
                    cut > 0 and counted == 0 and not any(o.ok for o in tiny),
                    f"{cut} groq attempts cut at the caller's deadline; "
                    f"{int(counted)} counted as groq timeouts",
                ),
            ],
        ),
    )


def _stream(index: int) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"chaos pool stream {index}, at length"}],
        "max_tokens": 300,
        "stream": True,
    }


def _answered(outcome: Outcome) -> bool:
    body = outcome.body or {}
    if "done" in body:  # a stream read back
        return bool(body.get("done") and body.get("content") and not body.get("stream_error"))
    return bool(body.get("content") and body.get("provider"))


async def test_pool_saturation(chaos: Chaos) -> None:
    """OpenAI takes 10 ms per output token and the gateway keeps 4 connections to it. Four
    streams asking for 300 tokens hold all four for 3 s; meanwhile short calls (16 tokens) come
    at 20/s. Each waits at most AI_POOL_WAIT_S (0.3 s) for a connection, then fails over to
    Gemini without anything sent to OpenAI: our saturation, counted in
    ai_local_saturation_total, never a verdict on OpenAI (its breaker stays closed)."""
    held, shorts, rate, pool_wait_s = 4, 50, 20.0, 0.3
    run = await chaos.start(
        {
            "AI_PROVIDER_PRIORITY": "openai,gemini",
            "OPENAI_MAX_CONNECTIONS": str(held),
            "AI_POOL_WAIT_S": str(pool_wait_s),
        }
    )
    await run.sandbox.chaos("openai", content=LONG_ANSWER, latency_per_token_ms=10)

    async def short_calls() -> list[Outcome]:
        for _ in range(250):  # until the sandbox has all the streams in hand
            stats = await run.sandbox.stats()
            if stats.get("openai", {}).get("completions", 0) >= held:
                break
            await asyncio.sleep(0.02)
        run.mark("pool full: short calls start")
        return await run.load(
            shorts,
            rate=rate,
            concurrency=shorts,
            phase="short",
            body=lambda i: {"prompt": f"chaos pool short {i}", "max_tokens": 16},
        )

    await run.gather(
        run.load(
            held,
            rate=100.0,
            concurrency=held,
            phase="held",
            body=_stream,
            path="/v1/chat/completions",
        ),
        short_calls(),
    )
    observation = await run.finish()
    short = [o for o in observation.outcomes if o.phase == "short"]
    moved = [o for o in short if any(a.get("error_type") == "local_saturation" for a in o.attempts)]
    slow_moves = [o.latency_s for o in moved if o.latency_s > pool_wait_s + 0.5]
    by_openai = sum((o.body or {}).get("provider") == "openai" for o in short)
    saturated = metric_total(observation.metrics, "ai_local_saturation_total", provider="openai")
    tripped_ok, tripped = _never_tripped(observation, ("openai",))
    openai_calls = observation.edge_calls["openai"] or 0
    chaos.conclude(
        run,
        observation,
        Expect(
            # Every request is exactly one upstream call: a saturated one sends nothing.
            max_upstream=held + shorts,
            upstream_why="1 per request (nothing sent while the pool is full)",
            answered=_answered,
            extra=[
                verdict("no-trip", "OpenAI's breaker stays closed", tripped_ok, tripped),
                verdict(
                    "fast",
                    "a short call waits at most the pool wait for a connection",
                    bool(moved) and not slow_moves,
                    f"{len(moved)} short calls failed over after the pool wait; "
                    f"slowest {max((o.latency_s for o in moved), default=0):.2f}s "
                    f"(bound {pool_wait_s + 0.5:g}s)",
                ),
                verdict(
                    "counted",
                    "the wait is counted as our own saturation",
                    bool(moved) and saturated == len(moved),
                    f"ai_local_saturation_total {saturated:g} == {len(moved)} failed over",
                ),
                verdict(
                    "nothing-sent",
                    "OpenAI got only the calls that had a connection",
                    openai_calls == held + by_openai,
                    f"openai calls {openai_calls} == {held} streams + {by_openai} short",
                ),
            ],
        ),
    )
