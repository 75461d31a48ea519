"""A try that was sent but gave no answer may still be billed: the provider read the prompt.
It is booked at its estimated input cost (not $0), flagged `cost_estimated` in its ledger
row, and settled into the budget: when the upstream hangs past a timeout (ours or the
caller's deadline), and when the caller goes away mid-call (a batch client that
disconnects cancels the AI verification in flight).

The far side is the sandbox's OpenAI (a paid provider, so a cost shows); the expected
estimate is worked out here from the public price and the documented rule of thumb (four
characters a token, four tokens a message)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.db import alembic_config
from app.core.settings import LiteratureSettings
from app.main import create_app
from infra.sandbox.literature.client import LiteratureSandbox
from tests.support.client import AUTH_HEADERS, gateway_client
from tests.support.ledger import ledger_rows
from tests.support.live import live_server
from tests.support.sandbox import Sandbox, fresh_database_url, sandbox_settings

INPUT_USD_PER_M = 0.15  # gpt-4o-mini input, the default price table's
PROMPT = "Summarise the randomised trial of shade trees in coffee agroforestry in one line."


def estimated_input_cost(prompt: str) -> float:
    tokens = len(prompt) // 4 + 4
    return tokens * INPUT_USD_PER_M / 1_000_000


def _openai_budget(budgets: list[dict[str, Any]]) -> dict[str, Any]:
    return next(b for b in budgets if b["budget"] == "openai")


@pytest.mark.parametrize(
    ("case", "overrides", "body", "status", "error_type"),
    [
        ("caller deadline", {}, {"timeout_s": 0.3}, 504, "caller_deadline"),
        (
            "provider timeout",
            {"ai_timeout_min_s": 0.2, "ai_timeout_max_s": 0.3},
            {},
            503,
            "timeout",
        ),
    ],
)
async def test_a_timed_out_call_is_booked_at_its_estimated_input_cost(
    sandbox: Sandbox,
    case: str,
    overrides: dict[str, Any],
    body: dict[str, Any],
    status: int,
    error_type: str,
) -> None:
    database_url = fresh_database_url()
    settings = sandbox_settings(
        sandbox.base_url, ai_provider_priority="openai", database_url=database_url, **overrides
    )
    sandbox.chaos("openai", hang=True)
    async with gateway_client(create_app(settings)) as client:
        response = await client.post("/v1/ai/completions", json={"prompt": PROMPT} | body)
        budget = _openai_budget((await client.get("/v1/budgets")).json()["budgets"])
        usage = (await client.get("/v1/usage")).json()
    assert response.status_code == status, response.text
    rows = [r for r in ledger_rows(database_url) if r["provider"] == "openai"]
    # Every try the sandbox received is a row (retries too, on the provider's timeout).
    assert len(rows) == sandbox.completions("openai") >= 1
    each = estimated_input_cost(PROMPT)
    for row in rows:
        assert (row["outcome"], row["error_type"]) == ("error", error_type)
        assert row["cost_usd"] > 0
        assert row["cost_usd"] == pytest.approx(each)
        assert row["cost_estimated"] == 1
        assert row["price_estimated"] == 0  # the model has its own price
        assert row["prompt_tokens"] == len(PROMPT) // 4 + 4
    booked = sum(row["cost_usd"] for row in rows)
    assert budget["spent_usd"] == pytest.approx(booked)
    assert budget["reserved_usd"] == 0
    assert usage["cost_usd"] == pytest.approx(booked)


async def test_a_call_whose_client_went_away_is_booked_at_its_estimated_input_cost(
    sandbox: Sandbox, lit: LiteratureSandbox
) -> None:
    """A batch client streams results and disconnects while tier 7's AI verification is in
    flight (the upstream hangs): the verification is cancelled, and its call is booked."""
    database_url = fresh_database_url()
    settings = sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="openai",
        database_url=database_url,
        literature=LiteratureSettings(**lit.settings()),
    )
    sandbox.chaos("openai", hang=True)
    paper = lit.entry("ai-generic-pdf")["paper"]
    with live_server(create_app(settings)) as url:
        async with httpx.AsyncClient(
            base_url=url, headers=AUTH_HEADERS, timeout=30, trust_env=False
        ) as client:
            async with client.stream(
                "POST",
                "/v1/fulltext/detect/batch",
                json={"papers": [paper]},
                headers={"Accept": "application/x-ndjson"},
            ) as response:
                assert response.status_code == 200
                deadline = time.monotonic() + 10
                while sandbox.completions("openai") == 0:  # the AI call is in flight
                    assert time.monotonic() < deadline, "tier 7 never called the AI"
                    await asyncio.sleep(0.02)
            # The stream is closed unread: the connection is gone.
            async with httpx.AsyncClient(
                base_url=url, headers=AUTH_HEADERS, timeout=30, trust_env=False
            ) as other:
                deadline = time.monotonic() + 10
                while True:
                    budget = _openai_budget((await other.get("/v1/budgets")).json()["budgets"])
                    if budget["spent_usd"] > 0 and budget["reserved_usd"] == 0:
                        break
                    assert time.monotonic() < deadline, f"never settled: {budget}"
                    await asyncio.sleep(0.05)
    rows = [r for r in ledger_rows(database_url) if r["provider"] == "openai"]
    assert len(rows) == sandbox.completions("openai") == 1
    (row,) = rows
    assert (row["outcome"], row["error_type"], row["cost_estimated"]) == ("error", "cancelled", 1)
    assert row["cost_usd"] > 0
    assert row["user_id"] == "tests"
    assert budget["spent_usd"] == pytest.approx(row["cost_usd"])


# --- the ledger column, on an existing database ------------------------------------------

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
async def ledger_at_0002(request: pytest.FixtureRequest) -> str:
    """A ledger as migration 0002 left it, with one row, on SQLite and (with
    TEST_POSTGRES_URL) PostgreSQL."""
    if request.param == "sqlite":
        database_url = fresh_database_url()
    elif POSTGRES_URL:
        database_url = POSTGRES_URL
        engine = create_async_engine(database_url)
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE IF EXISTS llm_usage_logs"))
            await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        await engine.dispose()
    else:
        pytest.skip("TEST_POSTGRES_URL is not set (.ci/run starts PostgreSQL)")
    # Alembic's env runs its own event loop: a thread, as app.core.db.migrate does.
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), "0002")
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
    return database_url


async def test_the_migration_adds_the_flag_to_an_existing_ledger(
    sandbox: Sandbox, ledger_at_0002: str
) -> None:
    """Migration 0003 on a ledger with rows: the old row reads as counted (not estimated),
    a timed-out call's row is flagged, and /v1/usage sums it from this database."""
    database_url = ledger_at_0002
    settings = sandbox_settings(
        sandbox.base_url, ai_provider_priority="openai", database_url=database_url
    )
    sandbox.chaos("openai", hang=True)
    async with gateway_client(create_app(settings)) as client:
        response = await client.post(
            "/v1/ai/completions", json={"prompt": PROMPT, "timeout_s": 0.3}
        )
        assert response.status_code == 504
        usage = (await client.get("/v1/usage")).json()
    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        result = await connection.execute(
            text("SELECT id, cost_estimated, cost_usd FROM llm_usage_logs")
        )
        rows = {str(row[0]): (bool(row[1]), float(row[2])) for row in result}
    await engine.dispose()
    assert rows.pop("old") == (False, 0.5)
    assert list(rows.values()) == [(True, pytest.approx(estimated_input_cost(PROMPT)))]
    assert usage["cost_usd"] == pytest.approx(estimated_input_cost(PROMPT))
