"""A paid provider's model with no price is never free.

With the OpenAI budget spent, pinning a model missing from the price table
(`gpt-4o-2024-08-06`, `openai/o1`, another Azure deployment, Gemini's `gemini-1.5-pro`) once
made hundreds of upstream calls, all booked at $0.00 in the budget and the ledger. Now such a
model is refused before any upstream call (404, OpenAI's `model_not_found` on the OpenAI
route), or, with AI_ALLOW_UNPRICED_MODELS=true, reserved and booked at its provider's worst
known price, flagged `price_estimated` in the ledger, and stopped by the budget like any other.
Every check of "no upstream call" is made at the sandbox, which counts what it received.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.db import alembic_config
from app.core.settings import ModelPrice, OpenAISettings
from app.main import create_app
from infra.sandbox.process import spawn_sandbox
from tests.support.client import CALLER_KEY, gateway_client
from tests.support.ledger import ledger_rows
from tests.support.live import live_server
from tests.support.sandbox import Sandbox, fresh_database_url, sandbox_settings

# Served by this module's sandbox, absent from the default price table.
UNPRICED_SERVED = {
    "openai": ["gpt-4o-mini", "gpt-4o", "gpt-4o-2024-08-06", "o1"],
    "azure": {"gpt-4o-mini": "gpt-4o-mini", "research-east": "gpt-4.1"},
    "gemini": ["gemini-1.5-flash", "gemini-1.5-pro", "gemini-2.0-flash"],
}
# Every way a caller can pin one of them, and the provider it reaches.
PINS = [
    ("openai/gpt-4o-2024-08-06", "openai"),
    ("gpt-4o-2024-08-06", "openai"),
    ("openai/o1", "openai"),
    ("o1", "openai"),
    ("azure/research-east", "azure"),
    ("gemini-1.5-pro", "gemini"),
    ("gemini/gemini-1.5-pro", "gemini"),
    ("gemini/gemini-2.0-flash", "gemini"),
]
OPENAI_WORST = ModelPrice(input=10.0, output=30.0)  # gpt-4-turbo, the dearest gpt-* priced
GEMINI_WORST = ModelPrice(input=0.075, output=0.30)  # gemini-1.5-flash, the only one priced
SPENT = {
    "daily_budget_usd_openai": 0.0,
    "daily_budget_usd_azure": 0.0,
    "daily_budget_usd_gemini": 0.0,
}


@pytest.fixture(scope="module")
def sandbox_module() -> Iterator[Sandbox]:
    """A sandbox of its own that serves models the price table does not know."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SANDBOX_MODELS", json.dumps(UNPRICED_SERVED))
        process, base_url = spawn_sandbox(timeout_s=20)
    sandbox = Sandbox(process, base_url)
    yield sandbox
    sandbox.stop()


@pytest.fixture
def sandbox(sandbox_module: Sandbox) -> Sandbox:
    sandbox_module.reset()
    httpx.delete(f"{sandbox_module.base_url}/_requests", trust_env=False).raise_for_status()
    return sandbox_module


def _posts(sandbox: Sandbox) -> list[str]:
    """Completion requests that reached the sandbox (health probes are GETs)."""
    response = httpx.get(f"{sandbox.base_url}/_requests", trust_env=False)
    response.raise_for_status()
    return [r["raw_path"] for r in response.json() if r["method"] == "POST"]


def _cost(price: ModelPrice, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for token counts at a price per 1M tokens, worked out here, not by the gateway."""
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000


def _completions(sandbox: Sandbox) -> int:
    return sum(int(entry["completions"]) for entry in sandbox.stats().values())


def _chat(model: str, *, stream: bool = False, max_tokens: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "x"}]}
    if stream:
        body["stream"] = True
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


# --- refused by default ------------------------------------------------------------------


@pytest.mark.parametrize(("model", "provider"), PINS)
async def test_an_unpriced_pin_is_refused_before_any_upstream_call(
    sandbox: Sandbox, model: str, provider: str
) -> None:
    settings = sandbox_settings(sandbox.base_url, **SPENT)
    async with gateway_client(create_app(settings)) as client:
        native = await client.post("/v1/ai/completions", json={"prompt": "x", "model": model})
        chat = await client.post("/v1/chat/completions", json=_chat(model))
        streamed = await client.post("/v1/chat/completions", json=_chat(model, stream=True))
    assert native.status_code == 404, native.text
    assert native.headers["content-type"].startswith("application/problem+json")
    problem = native.json()
    assert problem["type"].endswith("/unpriced-model")
    assert provider in problem["detail"]
    assert "AI_PRICING_FILE" in problem["detail"]
    assert "AI_ALLOW_UNPRICED_MODELS" in problem["detail"]
    assert [a["error_type"] for a in problem["attempts"]] == ["unpriced_model"]
    for response in (chat, streamed):
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == "model"
        assert error["code"] == "model_not_found"
        assert "AI_PRICING_FILE" in error["message"]
    assert _completions(sandbox) == 0
    assert _posts(sandbox) == []


async def test_a_budget_spent_for_real_lets_no_unpriced_pin_through(sandbox: Sandbox) -> None:
    database_url = fresh_database_url()
    settings = sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="openai",
        daily_budget_usd_openai=0.00002,
        database_url=database_url,
    )
    async with gateway_client(create_app(settings)) as client:
        codes = []
        for i in range(20):  # spend it on a priced model until the budget says no
            response = await client.post(
                "/v1/ai/completions",
                json={"prompt": f"p{i}", "model": "gpt-4o-mini", "max_tokens": 5},
            )
            codes.append(response.status_code)
            if response.status_code == 429:
                break
        assert codes[-1] == 429
        paid = _completions(sandbox)
        for model in ("openai/gpt-4o-2024-08-06", "gpt-4o-2024-08-06", "openai/o1", "o1"):
            for _ in range(5):
                response = await client.post(
                    "/v1/ai/completions", json={"prompt": "x", "model": model}
                )
                assert response.status_code == 404
                response = await client.post("/v1/chat/completions", json=_chat(model, stream=True))
                assert response.status_code == 404
    assert _completions(sandbox) == paid  # not one more upstream call
    rows = ledger_rows(database_url)
    assert {r["model"] for r in rows} == {"gpt-4o-mini"}
    assert all(r["cost_usd"] > 0 for r in rows)


def test_the_openai_sdk_raises_not_found_with_model_not_found(sandbox: Sandbox) -> None:
    with live_server(create_app(sandbox_settings(sandbox.base_url))) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=CALLER_KEY, max_retries=0)
        with pytest.raises(openai.NotFoundError) as info:
            sdk.chat.completions.create(model="o1", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"
    assert _completions(sandbox) == 0


async def test_an_alias_skips_its_unpriced_models_with_a_reason(sandbox: Sandbox) -> None:
    settings = sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="openai",
        openai=OpenAISettings(
            api_key="sk-sandbox-openai",
            base_url=f"{sandbox.base_url}/openai/v1",
            fast_models=["o1", "gpt-4o-mini"],
            quality_models=["o1"],
        ),
    )
    async with gateway_client(create_app(settings)) as client:
        fast = await client.post("/v1/ai/completions", json={"prompt": "x", "model": "fast"})
        quality = await client.post("/v1/ai/completions", json={"prompt": "x", "model": "quality"})
    assert fast.status_code == 200, fast.text
    body = fast.json()
    assert body["model"] == "gpt-4o-mini"
    steps = [(a["model"], a["outcome"], a["error_type"]) for a in body["attempts"]]
    assert steps[0] == ("o1", "skipped", "unpriced_model")
    # An alias with nothing priced left is refused like a pin, not retried as an outage.
    assert quality.status_code == 404
    assert quality.json()["type"].endswith("/unpriced-model")
    assert "o1" not in sandbox.stats()["openai"]["by_model"]


async def test_free_is_what_the_table_says(sandbox: Sandbox) -> None:
    """Groq is free by AI_FREE_PROVIDERS whatever the model; a paid model priced 0 in the
    table is free too: both pass a spent budget."""
    database_url = fresh_database_url()
    settings = sandbox_settings(
        sandbox.base_url,
        ai_prices={"gpt-4o-2024-08-06": ModelPrice(input=0, output=0)},
        database_url=database_url,
        **SPENT,
    )
    async with gateway_client(create_app(settings)) as client:
        priced_free = await client.post(
            "/v1/ai/completions", json={"prompt": "x", "model": "openai/gpt-4o-2024-08-06"}
        )
        groq = await client.post(
            "/v1/ai/completions", json={"prompt": "x", "model": "groq/llama-3.1-8b-instant"}
        )
    assert priced_free.status_code == 200, priced_free.text
    assert groq.status_code == 200, groq.text
    assert priced_free.json()["cost_usd"] == groq.json()["cost_usd"] == 0
    assert not any(r["price_estimated"] for r in ledger_rows(database_url))


# --- allowed: booked at the worst known price, flagged, and budgeted ---------------------


@pytest.mark.parametrize(
    ("model", "provider", "worst"),
    [
        ("openai/o1", "openai", OPENAI_WORST),
        ("gpt-4o-2024-08-06", "openai", OPENAI_WORST),
        ("azure/research-east", "azure", OPENAI_WORST),  # Azure deploys OpenAI's models
        ("gemini-1.5-pro", "gemini", GEMINI_WORST),
    ],
)
async def test_allowed_unpriced_models_are_booked_at_the_worst_price_and_flagged(
    sandbox: Sandbox, model: str, provider: str, worst: ModelPrice
) -> None:
    database_url = fresh_database_url()
    settings = sandbox_settings(
        sandbox.base_url, ai_allow_unpriced_models=True, database_url=database_url
    )
    async with gateway_client(create_app(settings)) as client:
        answer = await client.post(
            "/v1/ai/completions", json={"prompt": "What is base editing?", "model": model}
        )
        streamed = await client.post(
            "/v1/chat/completions",
            json=_chat(model, stream=True) | {"stream_options": {"include_usage": True}},
        )
        budgets = {b["budget"]: b for b in (await client.get("/v1/budgets")).json()["budgets"]}
    assert answer.status_code == 200, answer.text
    assert streamed.status_code == 200, streamed.text
    body = answer.json()
    usage = body["usage"]
    expected = _cost(worst, usage["prompt_tokens"], usage["completion_tokens"])
    assert body["cost_usd"] == pytest.approx(expected)
    assert body["cost_usd"] > 0
    rows = ledger_rows(database_url)
    assert [(r["provider"], r["outcome"], r["price_estimated"]) for r in rows] == [
        (provider, "success", 1),
        (provider, "success", 1),
    ]
    assert rows[0]["cost_usd"] == pytest.approx(expected)
    events = [
        json.loads(line.removeprefix("data: "))
        for line in streamed.text.splitlines()
        if line.startswith("data: {")
    ]
    stream_usage = events[-1]["usage"]
    assert rows[1]["cost_usd"] == pytest.approx(
        _cost(worst, stream_usage["prompt_tokens"], stream_usage["completion_tokens"])
    )
    assert budgets[provider]["spent_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows))
    assert _completions(sandbox) == 2


async def test_priced_models_are_not_flagged_when_unpriced_ones_are_allowed(
    sandbox: Sandbox,
) -> None:
    database_url = fresh_database_url()
    settings = sandbox_settings(
        sandbox.base_url, ai_allow_unpriced_models=True, database_url=database_url
    )
    async with gateway_client(create_app(settings)) as client:
        response = await client.post(
            "/v1/ai/completions", json={"prompt": "x", "model": "openai/gpt-4o-mini"}
        )
    assert response.status_code == 200
    assert [r["price_estimated"] for r in ledger_rows(database_url)] == [0]


@pytest.mark.parametrize("stream", [False, True])
async def test_allowed_unpriced_models_stop_at_the_budget(sandbox: Sandbox, stream: bool) -> None:
    budget = 0.002
    database_url = fresh_database_url()
    settings = sandbox_settings(
        sandbox.base_url,
        ai_allow_unpriced_models=True,
        ai_provider_priority="openai",
        daily_budget_usd_openai=budget,
        database_url=database_url,
    )
    async with gateway_client(create_app(settings)) as client:
        codes = [
            (
                await client.post(
                    "/v1/chat/completions",
                    json=_chat("openai/o1", stream=stream, max_tokens=20),
                )
            ).status_code
            for _ in range(30)
        ]
        after_spent = await client.post("/v1/ai/completions", json={"prompt": "x", "model": "o1"})
    assert 0 < codes.count(200) < 30
    assert set(codes) == {200, 429}
    assert codes.index(429) == codes.count(200)  # once refused, refused for the rest of the day
    assert after_spent.status_code == 429
    assert after_spent.json()["type"].endswith("/budget-exceeded")
    rows = ledger_rows(database_url)
    assert len(rows) == codes.count(200) == _completions(sandbox)
    assert all(r["price_estimated"] == 1 for r in rows)
    assert 0 < sum(r["cost_usd"] for r in rows) <= budget


# --- the ledger column, on an existing database ------------------------------------------


POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_ledger(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A database with no ledger yet, on SQLite and (with TEST_POSTGRES_URL) PostgreSQL."""
    if request.param == "sqlite":
        yield fresh_database_url()
        return
    if not POSTGRES_URL:
        pytest.skip("TEST_POSTGRES_URL is not set (.ci/run starts PostgreSQL)")
    engine = create_async_engine(POSTGRES_URL)
    async with engine.begin() as connection:
        await connection.execute(text("DROP TABLE IF EXISTS llm_usage_logs"))
        await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await engine.dispose()
    yield POSTGRES_URL


async def test_the_migration_adds_the_flag_to_an_existing_ledger(
    sandbox: Sandbox, empty_ledger: str
) -> None:
    """A ledger made before the column keeps its rows (read as priced) and takes new ones."""
    database_url = empty_ledger
    # Alembic's env runs its own event loop: a thread, as app.core.db.migrate does.
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), "0001")
    engine = create_async_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO llm_usage_logs (id, request_id, user_id, service_name, provider,"
                " outcome, prompt_tokens, completion_tokens, total_tokens, cost_usd,"
                " duration_ms, cached, created_at) VALUES ('old', 'r', 'tests', 's', 'openai',"
                " 'success', 1, 1, 2, 0.5, 1.0, false, '2020-01-01 00:00:00+00')"
            )
        )
    await engine.dispose()
    settings = sandbox_settings(
        sandbox.base_url, ai_allow_unpriced_models=True, database_url=database_url
    )
    async with gateway_client(create_app(settings)) as client:
        response = await client.post("/v1/ai/completions", json={"prompt": "x", "model": "o1"})
    assert response.status_code == 200
    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT id, price_estimated FROM llm_usage_logs"))
        flags = {str(row[0]): bool(row[1]) for row in result}
    await engine.dispose()
    assert flags.pop("old") is False
    assert list(flags.values()) == [True]
