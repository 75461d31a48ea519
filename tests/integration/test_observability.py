"""Health probes, /health/ai-providers, /health/ready and /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from app.core.settings import GroqSettings, Settings
from app.main import create_app
from tests.support.client import gateway_client
from tests.support.sandbox import GROQ_KEYS, Sandbox, sandbox_settings

Client = AsyncTestClient[Any]

EXPECTED_TYPES = {
    "ai_provider_requests": "counter",
    "ai_provider_latency_seconds": "histogram",
    "ai_provider_tokens": "counter",
    "ai_provider_cost_usd": "counter",
    "ai_provider_circuit_breaker_state": "gauge",
    "ai_provider_timeout_seconds": "gauge",
    "ai_provider_retries": "counter",
    "ai_fallbacks": "counter",
    "ai_provider_health": "gauge",
    "ai_gateway_overhead_seconds": "histogram",
    "gen_ai_client_operation_duration_seconds": "histogram",
    "gen_ai_client_token_usage": "histogram",
}


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


async def _wait_for_probes(client: Client, count: int) -> dict[str, Any]:
    for _ in range(100):
        report: dict[str, Any] = (await client.get("/health/ai-providers")).json()
        if sum(p["last_check"] is not None for p in report["providers"]) >= count:
            return report
        await asyncio.sleep(0.02)
    raise AssertionError("the background probes did not run")


async def test_probes_are_free_and_fill_the_health_report(client: Client, sandbox: Sandbox) -> None:
    report = await _wait_for_probes(client, 4)
    stats = sandbox.stats()
    for provider in ("groq", "gemini", "azure", "openai"):
        assert stats[provider]["probes"] >= 1
        assert stats[provider]["completions"] == 0  # never a paid completion
    by_name = {p["provider"]: p for p in report["providers"]}
    assert report["status"] == "healthy"
    groq = by_name["groq"]
    assert groq["status"] == "healthy"
    assert groq["last_check"]["ok"] is True
    assert groq["breaker_state"] == "closed"
    assert groq["timeout_s"] == 5.0  # the warm-up default for Groq
    assert (groq["keys_total"], groq["keys_available"]) == (3, 3)
    assert by_name["openai"]["timeout_s"] == 15.0
    assert by_name["gemini"]["timeout_s"] == 10.0


async def test_failed_probe_and_errors_degrade_then_open_breaker_is_unhealthy(
    sandbox: Sandbox,
) -> None:
    settings = sandbox_settings(
        sandbox.base_url,
        groq=GroqSettings(
            api_keys=GROQ_KEYS,
            base_url=f"{sandbox.base_url}/groq/openai/v1",
            breaker_fail_max=3,
            rpm_per_key=10_000,
        ),
    )
    sandbox.chaos("groq", error_rate=1.0, error_status=503, affect_probes=True)
    async with gateway_client(create_app(settings)) as client:
        report = await _wait_for_probes(client, 4)
        groq = next(p for p in report["providers"] if p["provider"] == "groq")
        assert groq["status"] == "degraded"
        assert groq["last_check"]["error"] == "upstream_error"
        for _ in range(3):
            await client.post("/v1/ai/completions", json={"prompt": "x"})
        report = (await client.get("/health/ai-providers")).json()
        groq = next(p for p in report["providers"] if p["provider"] == "groq")
        assert groq["status"] == "unhealthy"
        assert groq["breaker_state"] == "open"
        assert groq["error_rate"] == 1.0
        assert report["status"] == "healthy"  # the others still are
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert "groq" not in ready.json()["providers_usable"]
        metrics = _families((await client.get("/metrics")).text)
    health = {s.labels["provider"]: s.value for s in metrics["ai_provider_health"].samples}
    assert health["groq"] == 0.0
    assert health["gemini"] == 1.0


async def test_still_ready_when_every_configured_provider_is_unhealthy(sandbox: Sandbox) -> None:
    """Readiness is about this replica. Every replica shares the upstream's outage, so a
    503 here would take them all out of the load balancer and turn the gateway's fast typed
    503s into refused connections; the outage shows in /health/ai-providers instead."""
    settings = Settings(
        ai_provider_priority="groq",
        groq=GroqSettings(
            api_keys=GROQ_KEYS[:1],
            base_url=f"{sandbox.base_url}/groq/openai/v1",
            breaker_fail_max=2,
        ),
    )
    sandbox.chaos("groq", error_rate=1.0, error_status=500)
    async with gateway_client(create_app(settings)) as client:
        for _ in range(2):
            await client.post("/v1/ai/completions", json={"prompt": "x"})
        answer = await client.post("/v1/ai/completions", json={"prompt": "x"})
        ready = await client.get("/health/ready")
        report = (await client.get("/health/ai-providers")).json()
    assert answer.status_code == 503  # callers get a fast typed answer
    assert answer.json()["type"].endswith("/all-providers-failed")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["providers_configured"] == ["groq"]
    assert body["providers_usable"] == []
    assert "every configured provider is unhealthy" in body["detail"]
    assert report["status"] == "unhealthy"


async def test_metrics_has_every_name_with_its_type_after_traffic(
    client: Client, sandbox: Sandbox
) -> None:
    answers = []
    for chaos in ({}, {"error_rate": 1.0, "error_status": 503}):
        sandbox.chaos("groq", **chaos)
        answer = await client.post("/v1/ai/completions", json={"prompt": "hello"})
        assert answer.status_code == 200
        answers.append(answer.json())
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    families = _families(text)
    for name, kind in EXPECTED_TYPES.items():
        assert name in families, name
        assert families[name].type == kind, name
    requests = {
        (s.labels["provider"], s.labels["outcome"]): s.value
        for s in families["ai_provider_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests[("groq", "success")] == 1
    assert requests[("groq", "upstream_error")] == 1
    assert requests[("gemini", "success")] == 1
    tokens = {
        (s.labels["provider"], s.labels["token_type"]): s.value
        for s in families["ai_provider_tokens"].samples
        if s.name.endswith("_total")
    }
    for answer in answers:
        usage = answer["usage"]
        assert tokens[(answer["provider"], "input")] == usage["prompt_tokens"]
        assert tokens[(answer["provider"], "output")] == usage["completion_tokens"]
    fallbacks = [s for s in families["ai_fallbacks"].samples if s.name.endswith("_total")]
    assert [(s.labels["from_provider"], s.labels["to_provider"], s.value) for s in fallbacks] == [
        ("groq", "gemini", 1.0)
    ]
    genai = families["gen_ai_client_token_usage"].samples[0].labels
    assert {
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_token_type",
    } <= set(genai)
    # Each family once (no double registration), no scope or target_info noise.
    assert text.count("# TYPE ai_provider_requests_total counter") == 1
    assert "otel_scope" not in text
    assert "target_info" not in text
    # Nothing the caller sent becomes a label; keys never show.
    assert "hello" not in text
    assert "gsk-sandbox" not in text


async def test_pinned_unknown_model_is_not_a_label(client: Client) -> None:
    await client.post("/v1/ai/completions", json={"prompt": "x", "model": "openai/caller-junk-123"})
    assert "caller-junk-123" not in (await client.get("/metrics")).text


async def test_two_apps_in_one_process_share_no_breaker_or_metric(sandbox: Sandbox) -> None:
    def settings() -> Settings:
        return sandbox_settings(
            sandbox.base_url,
            groq=GroqSettings(
                api_keys=GROQ_KEYS,
                base_url=f"{sandbox.base_url}/groq/openai/v1",
                breaker_fail_max=2,
            ),
        )

    sandbox.chaos("groq", error_rate=1.0, error_status=503)
    async with (
        gateway_client(create_app(settings())) as first,
        gateway_client(create_app(settings())) as second,
    ):
        for _ in range(2):
            await first.post("/v1/ai/completions", json={"prompt": "x"})
        states = []
        for client in (first, second):
            report = (await client.get("/health/ai-providers")).json()
            states.append(next(p for p in report["providers"] if p["provider"] == "groq"))
        assert states[0]["breaker_state"] == "open"
        assert states[1]["breaker_state"] == "closed"
        first_metrics = _families((await first.get("/metrics")).text)
        second_metrics = _families((await second.get("/metrics")).text)
    assert first_metrics["ai_provider_requests"].samples
    assert "ai_provider_requests" not in second_metrics
    second_breakers = {
        s.labels["provider"]: s.value
        for s in second_metrics["ai_provider_circuit_breaker_state"].samples
    }
    assert second_breakers["groq"] == 0.0


def _overhead(text: str) -> tuple[float, float]:
    """(count, sum) of ai_gateway_overhead_seconds."""
    samples = _families(text)["ai_gateway_overhead_seconds"].samples
    values = {s.name: s.value for s in samples}
    return values["ai_gateway_overhead_seconds_count"], values["ai_gateway_overhead_seconds_sum"]


async def test_overhead_is_the_whole_request_minus_upstream_waits(
    client: Client, sandbox: Sandbox
) -> None:
    """Counted from the middleware stack to the sent response, for every completion request
    (a 400 never reaches the service yet costs the gateway), with the upstream wait taken out."""
    sandbox.chaos("groq", latency_ms=300)
    answer = await client.post("/v1/ai/completions", json={"prompt": "hello"})
    assert answer.status_code == 200
    count, total = _overhead((await client.get("/metrics")).text)
    assert count == 1
    assert 0 < total < 0.2  # the 300 ms upstream wait is not overhead
    assert (await client.post("/v1/chat/completions", json={"messages": []})).status_code == 400
    await client.get("/health/live")  # not a completion path: not measured
    count, _ = _overhead((await client.get("/metrics")).text)
    assert count == 2
