"""The ledger on a real PostgreSQL server (started by .ci/run; set TEST_POSTGRES_URL)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.main import create_app
from tests.support.client import CALLER, gateway_client
from tests.support.sandbox import Sandbox, sandbox_settings

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")

pytestmark = pytest.mark.skipif(
    not POSTGRES_URL, reason="TEST_POSTGRES_URL is not set (.ci/run starts PostgreSQL)"
)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A database with no schema yet: the app's migrations must make it."""
    assert POSTGRES_URL
    engine = create_async_engine(POSTGRES_URL)
    async with engine.begin() as connection:
        await connection.execute(text("DROP TABLE IF EXISTS llm_usage_logs"))
        await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    yield POSTGRES_URL
    await engine.dispose()


async def _rows(url: str) -> list[tuple[str, str, float, str]]:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        result = await connection.execute(
            text("SELECT provider, outcome, cost_usd, user_id FROM llm_usage_logs")
        )
        rows = [(str(r[0]), str(r[1]), float(r[2]), str(r[3])) for r in result]
    await engine.dispose()
    return rows


async def test_ledger_and_budget_rebuild_on_postgres(sandbox: Sandbox, postgres_url: str) -> None:
    settings = sandbox_settings(
        sandbox.base_url, ai_provider_priority="groq,openai", database_url=postgres_url
    )
    sandbox.chaos("groq", error_rate=1.0, error_status=503)
    async with gateway_client(create_app(settings)) as client:
        for i in range(3):
            response = await client.post("/v1/ai/completions", json={"prompt": f"paper {i}"})
            assert response.json()["provider"] == "openai"
    rows = await _rows(postgres_url)
    assert (
        sorted((p, o) for p, o, _, _ in rows)
        == [("groq", "error")] * 3 + [("openai", "success")] * 3
    )
    assert {u for *_, u in rows} == {CALLER}
    spent = sum(c for _, _, c, _ in rows)
    assert spent > 0
    # A restart on the same database keeps today's spend.
    async with gateway_client(create_app(settings)) as client:
        metrics = (await client.get("/metrics")).text
    line = next(
        m for m in metrics.splitlines() if m.startswith('ai_budget_spent_usd{budget="openai"}')
    )
    assert float(line.split()[-1]) == pytest.approx(spent)
