"""A budget 429's Retry-After is true: the day's reset when money is spent, a few seconds
when only calls still in flight hold the budget. Real concurrency (uvicorn on loopback)
against the sandbox's OpenAI; costs worked out here from the public price table."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx

from app.main import create_app
from tests.support.client import AUTH_HEADERS
from tests.support.live import live_server
from tests.support.sandbox import Sandbox, sandbox_settings

# gpt-4o-mini, USD per 1M tokens (the default price table's, as OpenAI publishes them).
INPUT, OUTPUT = 0.15, 0.60
BUDGET = 0.001


def worst_case(prompt: str, max_tokens: int) -> float:
    """The gateway's documented worst case: every prompt byte a token, plus 8 per message,
    and the whole max_tokens."""
    return ((len(prompt.encode()) + 8) * INPUT + max_tokens * OUTPUT) / 1_000_000


def seconds_to_midnight_utc() -> float:
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return (midnight - now).total_seconds()


def _settings(sandbox: Sandbox) -> object:
    return sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="openai",
        daily_budget_usd_openai=BUDGET,
        gateway_caller_rpm=None,
    )


async def test_a_budget_held_by_a_call_in_flight_says_so_with_a_short_wait(
    sandbox: Sandbox,
) -> None:
    """One call's worst case fits the budget, two do not. While the first is in flight
    (the upstream takes a second) a second is refused: nothing is spent yet, so the 429
    says the budget is held by calls in flight and to come back in seconds, not tomorrow;
    once the first has settled, the same request passes."""
    assert worst_case("x", 1000) <= BUDGET < 2 * worst_case("x", 1000)
    sandbox.chaos("openai", latency_ms=1000)
    with live_server(create_app(_settings(sandbox))) as url:  # type: ignore[arg-type]
        async with httpx.AsyncClient(
            base_url=url, headers=AUTH_HEADERS, timeout=30, trust_env=False
        ) as client:
            body = {"prompt": "x", "max_tokens": 1000}

            async def second() -> httpx.Response:
                await asyncio.sleep(0.3)
                return await client.post("/v1/ai/completions", json=body)

            first, refused = await asyncio.gather(
                client.post("/v1/ai/completions", json=body), second()
            )
            sandbox.clear("openai")
            again = await client.post("/v1/ai/completions", json=body)
    assert first.status_code == 200, first.text
    assert refused.status_code == 429, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/budget-exceeded")
    assert "in flight" in problem["detail"]
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    assert again.status_code == 200, again.text


async def test_a_spent_budget_waits_until_the_reset(sandbox: Sandbox) -> None:
    """A long answer spends about a third of the budget; then a request whose worst case
    alone fits, but not on top of what is spent, is refused until midnight (UTC, the
    budgets' default time zone), and the message does not blame calls in flight."""
    long_answer = "word " * 400  # about 500 completion tokens: 3e-4 USD
    sandbox.chaos("openai", content=long_answer)
    with live_server(create_app(_settings(sandbox))) as url:  # type: ignore[arg-type]
        async with httpx.AsyncClient(
            base_url=url, headers=AUTH_HEADERS, timeout=30, trust_env=False
        ) as client:
            spent = await client.post(
                "/v1/ai/completions", json={"prompt": "x", "max_tokens": 1000}
            )
            assert spent.status_code == 200, spent.text
            cost = spent.json()["cost_usd"]
            asked = worst_case("x", 1500)
            assert asked <= BUDGET < cost + asked
            refused = await client.post(
                "/v1/ai/completions", json={"prompt": "x", "max_tokens": 1500}
            )
            budgets = (await client.get("/v1/budgets")).json()["budgets"]
    assert refused.status_code == 429, refused.text
    assert "in flight" not in refused.json()["detail"]
    assert abs(int(refused.headers["retry-after"]) - seconds_to_midnight_utc()) <= 5
    openai = next(b for b in budgets if b["budget"] == "openai")
    assert openai["reserved_usd"] == 0
    assert openai["spent_usd"] == cost
