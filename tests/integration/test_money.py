"""Budgets, the usage ledger and the response cache, end to end against the sandbox."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from app.core.settings import Settings
from app.main import create_app
from tests.support.client import AUTH_HEADERS, CALLER, gateway_client
from tests.support.ledger import ledger_rows
from tests.support.live import live_server
from tests.support.sandbox import Sandbox, fresh_database_url, sandbox_settings


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not exported")


async def test_a_paid_provider_over_budget_is_skipped_for_the_next(sandbox: Sandbox) -> None:
    settings = sandbox_settings(sandbox.base_url, daily_budget_usd_gemini=0.0)
    sandbox.chaos("groq", error_rate=1.0, error_status=503)
    async with gateway_client(create_app(settings)) as client:
        body = (await client.post("/v1/ai/completions", json={"prompt": "x"})).json()
    assert body["provider"] == "azure"
    steps = [(a["provider"], a["outcome"], a["error_type"]) for a in body["attempts"]]
    assert steps[1] == ("gemini", "skipped", "budget_exceeded")
    assert sandbox.completions("gemini") == 0


async def test_every_provider_blocked_is_a_429_until_the_day_resets(sandbox: Sandbox) -> None:
    settings = sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="gemini,azure,openai",
        daily_budget_usd_gemini=0.0,
        daily_budget_usd_azure=0.0,
        daily_budget_usd_openai=0.0,
    )
    async with gateway_client(create_app(settings)) as client:
        response = await client.post("/v1/ai/completions", json={"prompt": "x"})
    assert response.status_code == 429
    assert response.json()["type"].endswith("/budget-exceeded")
    assert 1 <= int(response.headers["retry-after"]) <= 86400


async def test_200_concurrent_requests_never_pass_a_budget(sandbox: Sandbox) -> None:
    budget = 0.001
    database_url = fresh_database_url()
    settings = sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="openai",
        daily_budget_usd_openai=budget,
        database_url=database_url,
        gateway_caller_rpm=None,
    )
    sandbox.chaos("openai", latency_ms=50, latency_jitter_ms=50)
    with live_server(create_app(settings)) as url:
        async with httpx.AsyncClient(
            base_url=url, headers=AUTH_HEADERS, timeout=30, trust_env=False
        ) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/v1/ai/completions",
                        json={"prompt": f"Summarise paper number {i}.", "max_tokens": 20},
                    )
                    for i in range(200)
                )
            )
            metrics = (await client.get("/metrics")).text
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}
    assert 0 < codes.count(200) < 200  # the budget let some through and stopped the rest
    spent = sum(r.json()["cost_usd"] for r in responses if r.status_code == 200)
    assert spent <= budget
    assert _metric(metrics, "ai_budget_spent_usd", budget="openai") == pytest.approx(spent)
    ledger_total = sum(row["cost_usd"] for row in ledger_rows(database_url))
    assert ledger_total == pytest.approx(spent)
    assert ledger_total <= budget
    assert sandbox.completions("openai") == codes.count(200)


async def test_every_attempt_and_cache_hit_is_a_ledger_row(sandbox: Sandbox) -> None:
    database_url = fresh_database_url()
    settings = sandbox_settings(sandbox.base_url, database_url=database_url)
    sandbox.chaos("groq", fail_next=1, error_status=503)
    async with gateway_client(create_app(settings)) as client:
        first = (
            await client.post(
                "/v1/ai/completions",
                json={"prompt": "secret prompt text", "intent": "analysis", "temperature": 0},
            )
        ).json()
        again = (
            await client.post(
                "/v1/ai/completions",
                json={"prompt": "secret prompt text", "intent": "analysis", "temperature": 0},
            )
        ).json()
    # The app is closed: the ledger has flushed everything.
    rows = ledger_rows(database_url)
    assert [(r["provider"], r["outcome"], r["status_code"]) for r in rows] == [
        ("groq", "error", 503),
        ("gemini", "success", 200),
        ("gemini", "cache_hit", 200),
    ]
    failed, answered, hit = rows
    assert failed["request_id"] == answered["request_id"] != hit["request_id"]
    assert failed["error_type"] == "upstream_error"
    assert failed["error_message"]
    assert answered["user_id"] == CALLER
    assert answered["service_name"] == "ai-completions"
    assert answered["intent"] == "analysis"
    assert answered["endpoint"] == "generateContent"
    assert answered["prompt_tokens"] == first["usage"]["prompt_tokens"]
    assert answered["total_tokens"] == first["usage"]["total_tokens"]
    assert answered["cost_usd"] == pytest.approx(first["cost_usd"]) != 0
    assert (hit["cached"], hit["cost_usd"]) == (1, 0)
    assert again["cached"] is True
    assert again["cost_usd"] == 0
    assert again["content"] == first["content"]
    assert sandbox.completions("gemini") == 1
    assert all("secret prompt" not in json.dumps(row, default=str) for row in rows)


async def test_identical_concurrent_requests_make_one_upstream_call(sandbox: Sandbox) -> None:
    settings = sandbox_settings(sandbox.base_url)
    sandbox.chaos("groq", latency_ms=300)
    with live_server(create_app(settings)) as url:
        async with httpx.AsyncClient(
            base_url=url, headers=AUTH_HEADERS, timeout=30, trust_env=False
        ) as client:
            responses = await asyncio.gather(
                *(
                    client.post("/v1/ai/completions", json={"prompt": "same", "cache": True})
                    for _ in range(20)
                )
            )
            metrics = (await client.get("/metrics")).text
    assert all(r.status_code == 200 for r in responses)
    assert sandbox.completions("groq") == 1
    assert sum(r.json()["cached"] for r in responses) == 19
    assert _metric(metrics, "ai_cache_requests_total", result="hit") == 19
    assert _metric(metrics, "ai_cache_requests_total", result="miss") == 1


async def test_a_restart_rebuilds_todays_spend_from_the_ledger(sandbox: Sandbox) -> None:
    database_url = fresh_database_url()

    def settings() -> Settings:
        return sandbox_settings(
            sandbox.base_url, ai_provider_priority="openai", database_url=database_url
        )

    async with gateway_client(create_app(settings())) as client:
        for i in range(3):
            await client.post("/v1/ai/completions", json={"prompt": f"paper {i}"})
        before = _metric(
            (await client.get("/metrics")).text, "ai_budget_spent_usd", budget="openai"
        )
    assert before > 0
    async with gateway_client(create_app(settings())) as client:
        after = _metric((await client.get("/metrics")).text, "ai_budget_spent_usd", budget="openai")
    assert after == pytest.approx(before)


async def test_requests_are_served_while_the_ledger_database_is_locked(sandbox: Sandbox) -> None:
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
            for i in range(5):
                response = await client.post("/v1/ai/completions", json={"prompt": f"p{i}"})
                assert response.status_code == 200
            await asyncio.sleep(0.3)
            metrics = (await client.get("/metrics")).text
            assert _metric(metrics, "ai_ledger_write_failures_total", reason="database") >= 1
            assert _metric(metrics, "ai_ledger_buffer_rows") == 5
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await asyncio.sleep(0.5)  # the writer retries with backoff and catches up
        metrics = (await client.get("/metrics")).text
        assert _metric(metrics, "ai_ledger_buffer_rows") == 0
    assert len(ledger_rows(database_url)) == 5


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An alert receiver on 127.0.0.1, in its own thread and loop like a real remote service."""
    received: list[dict[str, Any]] = []
    started = threading.Event()
    stop = threading.Event()
    address: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/alerts", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        address.append(runner.addresses[0][1])
        started.set()
        await asyncio.to_thread(stop.wait)
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield f"http://127.0.0.1:{address[0]}/alerts", received
    stop.set()
    thread.join(10)


async def test_budget_alerts_reach_the_webhook_once_per_level(
    sandbox: Sandbox, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    settings = sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="openai",
        daily_budget_usd_openai=0.0001,
        budget_alert_webhook_url=url,
    )
    # Each call costs about 3.6e-6 USD: 80 % is passed after ~23 calls, 90 % after ~25.
    async with gateway_client(create_app(settings)) as client:
        for i in range(30):
            await client.post("/v1/ai/completions", json={"prompt": f"p{i}", "max_tokens": 10})
    levels = sorted(alert["level_percent"] for alert in received)
    assert levels[:2] == [80, 90]
    assert len(levels) == len(set(levels))
    assert all(alert["budget"] == "openai" for alert in received)


async def test_a_dead_webhook_never_fails_a_request(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    settings = sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="openai",
        daily_budget_usd_openai=0.00002,
        budget_alert_webhook_url="http://127.0.0.1:9/alerts",
        budget_alert_webhook_timeout_s=0.5,
    )
    async with gateway_client(create_app(settings)) as client:
        codes = [
            (
                await client.post("/v1/ai/completions", json={"prompt": f"p{i}", "max_tokens": 5})
            ).status_code
            for i in range(6)
        ]
    assert codes[:5] == [200] * 5
    assert "budget alert webhook failed" in caplog.text


async def test_usage_and_budgets_routes(sandbox: Sandbox) -> None:
    settings = sandbox_settings(
        sandbox.base_url,
        gateway_api_keys={CALLER: "test-caller-key-0001", "other": "other-caller-key"},
        daily_budget_usd_openai=1.0,
    )
    sandbox.chaos("groq", fail_next=1, error_status=503)
    async with gateway_client(create_app(settings)) as client:
        first = (await client.post("/v1/ai/completions", json={"prompt": "x"})).json()
        await client.post(
            "/v1/ai/completions",
            json={"prompt": "y"},
            headers={"Authorization": "Bearer other-caller-key"},
        )
        usage = (await client.get("/v1/usage")).json()
        budgets = (await client.get("/v1/budgets")).json()["budgets"]
    assert usage["caller"] == CALLER
    lines = {(line["provider"], line["model"]): line for line in usage["lines"]}
    # Only this caller's rows: its failed groq attempt and its gemini answer.
    assert set(lines) == {("groq", "llama-3.1-8b-instant"), ("gemini", "gemini-1.5-flash")}
    assert lines[("groq", "llama-3.1-8b-instant")]["successes"] == 0
    assert lines[("gemini", "gemini-1.5-flash")]["cost_usd"] == pytest.approx(first["cost_usd"])
    assert usage["cost_usd"] == pytest.approx(first["cost_usd"])
    by_name = {b["budget"]: b for b in budgets}
    assert by_name["openai"]["limit_usd"] == 1.0
    assert by_name["gemini"]["spent_usd"] == pytest.approx(first["cost_usd"])
    assert by_name["gemini"]["remaining_usd"] == pytest.approx(10.0 - first["cost_usd"])
    assert by_name["gemini"]["reserved_usd"] == 0
