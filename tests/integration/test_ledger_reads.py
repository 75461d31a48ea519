"""GET /v1/usage reads the ledger without writing it: the background writer stays the only
writer, a read sees the database plus the rows still buffered (none twice, none missed), and
a database that cannot be read is a 503 with Retry-After, not a 500."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from app.main import create_app
from tests.support.client import AUTH_HEADERS, gateway_client
from tests.support.live import live_server
from tests.support.sandbox import Sandbox, fresh_database_url, sandbox_settings

WORKERS, ROUNDS = 16, 8


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _totals(usage: dict[str, Any]) -> tuple[int, int, float]:
    lines = usage["lines"]
    return (
        sum(line["attempts"] for line in lines),
        sum(line["prompt_tokens"] for line in lines),
        usage["cost_usd"],
    )


async def test_usage_reads_under_load_are_exact_and_never_write(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """16 workers each post a paid completion and read /v1/usage, 8 times, while the writer
    flushes small batches every 10 ms. Every read counts at least the calls answered before
    it began and at most those begun before it ended; no write fails (a second writer on
    the request path inserted the same rows twice: IntegrityError); the final read is exact."""
    settings = sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="openai",
        ledger_batch_size=3,
        ledger_flush_interval_s=0.01,
        gateway_caller_rpm=None,
    )
    sandbox.chaos("openai", latency_ms=5, latency_jitter_ms=20)
    started = answered = 0
    costs: list[float] = []
    prompts: list[int] = []
    bounds: list[tuple[int, int, int]] = []
    statuses: list[int] = []
    with live_server(create_app(settings)) as url:
        async with httpx.AsyncClient(
            base_url=url, headers=AUTH_HEADERS, timeout=30, trust_env=False
        ) as client:

            async def worker(number: int) -> None:
                nonlocal started, answered
                for i in range(ROUNDS):
                    started += 1
                    response = await client.post(
                        "/v1/ai/completions",
                        json={"prompt": f"worker {number} paper {i}", "max_tokens": 20},
                    )
                    statuses.append(response.status_code)
                    body = response.json()
                    costs.append(body["cost_usd"])
                    prompts.append(body["usage"]["prompt_tokens"])
                    answered += 1
                    low = answered
                    usage = await client.get("/v1/usage")
                    statuses.append(usage.status_code)
                    bounds.append((low, _totals(usage.json())[0], started))

            await asyncio.gather(*(worker(n) for n in range(WORKERS)))
            final = (await client.get("/v1/usage")).json()
            metrics = (await client.get("/metrics")).text
    assert set(statuses) == {200}
    assert all(low <= seen <= high for low, seen, high in bounds), [
        b for b in bounds if not b[0] <= b[1] <= b[2]
    ]
    attempts, prompt_tokens, cost = _totals(final)
    assert attempts == WORKERS * ROUNDS
    assert prompt_tokens == sum(prompts)
    assert cost == pytest.approx(sum(costs), abs=1e-9)
    assert _metric(metrics, "ai_ledger_write_failures_total", reason="database") == 0
    assert "IntegrityError" not in caplog.text
    assert "ledger write failed" not in caplog.text


async def test_a_locked_ledger_database_is_a_503_with_retry_after(sandbox: Sandbox) -> None:
    """Another process holds an exclusive lock on the SQLite ledger: /v1/usage answers 503
    ledger-unavailable with a Retry-After (a passing condition, not our bug); once the lock
    is gone it answers again, with the calls made meanwhile."""
    database_url = fresh_database_url()
    settings = sandbox_settings(
        sandbox.base_url,
        database_url=database_url,
        database_busy_timeout_s=0.05,
        ledger_flush_interval_s=0.05,
    )
    async with gateway_client(create_app(settings)) as client:
        path = make_url(database_url).database
        assert path
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            answered = await client.post("/v1/ai/completions", json={"prompt": "p"})
            locked = await client.get("/v1/usage")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        unlocked = await client.get("/v1/usage")
    assert answered.status_code == 200
    assert locked.status_code == 503, locked.text
    assert locked.headers["content-type"].startswith("application/problem+json")
    assert locked.json()["type"].endswith("/ledger-unavailable")
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    assert unlocked.status_code == 200
    assert _totals(unlocked.json())[0] == 1
