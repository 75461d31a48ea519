"""Monthly caps through the API, in process and on Redis: a 429 says the monthly cap was
reached and waits until the month resets; /v1/budgets shows each budget per period and
/v1/usage this month's totals beside today's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from app.core.ids import random_hex
from app.main import create_app
from tests.support.client import gateway_client
from tests.support.redis import REDIS_SERVER, RedisServer
from tests.support.sandbox import Sandbox, sandbox_settings


@pytest.fixture(params=["in-process", "redis"])
def redis_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "in-process":
        yield None
        return
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    server = RedisServer().start()
    yield server.url
    server.stop()


def seconds_to_next_month() -> float:
    now = datetime.now(UTC)
    first = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return (first - now).total_seconds()


async def test_a_monthly_cap_is_a_429_until_the_month_resets(
    sandbox: Sandbox, redis_url: str | None
) -> None:
    settings = sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="openai",
        daily_budget_usd_openai=100.0,
        monthly_budget_usd_openai=0.000_05,  # less than one call's worst case
        redis_url=redis_url,
        redis_key_prefix=f"m{random_hex()[:8]}:",
    )
    async with gateway_client(create_app(settings)) as client:
        refused = await client.post(
            "/v1/ai/completions", json={"prompt": "x", "model": "openai/gpt-4o-mini"}
        )
        budgets = (await client.get("/v1/budgets")).json()["budgets"]
        usage = (await client.get("/v1/usage")).json()
    assert refused.status_code == 429
    problem = refused.json()
    assert problem["type"].endswith("/budget-exceeded")
    assert "monthly budget" in problem["detail"]
    assert "daily" not in problem["detail"]
    assert int(refused.headers["retry-after"]) == pytest.approx(seconds_to_next_month(), abs=5)
    assert sandbox.completions("openai") == 0
    lines = {(x["budget"], x["period"]): x for x in budgets}
    assert lines[("openai", "day")]["limit_usd"] == 100.0
    month = lines[("openai", "month")]
    assert month["limit_usd"] == 0.000_05
    assert month["spent_usd"] == month["reserved_usd"] == 0
    assert month["month"] == datetime.now(UTC).strftime("%Y-%m")
    assert usage["month"] == month["month"]
    assert usage["month_cost_usd"] == 0
    assert usage["month_lines"] == []


async def test_budgets_and_usage_show_both_periods_after_a_paid_call(
    sandbox: Sandbox, redis_url: str | None
) -> None:
    settings = sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="openai",
        monthly_budget_usd_openai=10.0,
        monthly_budget_usd_per_caller=5.0,
        redis_url=redis_url,
        redis_key_prefix=f"m{random_hex()[:8]}:",
    )
    async with gateway_client(create_app(settings)) as client:
        answer = (
            await client.post(
                "/v1/ai/completions", json={"prompt": "x", "model": "openai/gpt-4o-mini"}
            )
        ).json()
        budgets = (await client.get("/v1/budgets")).json()["budgets"]
        usage = (await client.get("/v1/usage")).json()
    cost = answer["cost_usd"]
    assert cost > 0
    lines = {(x["budget"], x["period"]): x for x in budgets}
    for key in (("openai", "day"), ("openai", "month"), ("caller:tests", "month")):
        assert lines[key]["spent_usd"] == pytest.approx(cost), key
        assert lines[key]["reserved_usd"] == 0
    assert ("caller:tests", "day") not in lines  # no daily per-caller budget configured
    assert usage["cost_usd"] == pytest.approx(cost)
    assert usage["month_cost_usd"] == pytest.approx(cost)
    assert [(x["provider"], x["attempts"]) for x in usage["month_lines"]] == [("openai", 1)]
