"""Provider guards end to end against the sandbox: breaker, adaptive timeout, retries,
rate limits."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from litestar.testing import AsyncTestClient

from app.core.clock import ManualClock
from app.core.settings import GroqSettings, Settings
from app.main import create_app
from tests.support.client import AUTH_HEADERS, gateway_client
from tests.support.live import live_server
from tests.support.overrides import manual_clock
from tests.support.sandbox import GROQ_KEYS, Sandbox, sandbox_settings

Client = AsyncTestClient[Any]


def _groq(sandbox: Sandbox, **overrides: Any) -> GroqSettings:
    values: dict[str, Any] = {
        "api_keys": GROQ_KEYS,
        "base_url": f"{sandbox.base_url}/groq/openai/v1",
        "rpm_per_key": 10_000,
    }
    values.update(overrides)
    return GroqSettings(**values)


async def _ask(client: Client, **extra: Any) -> Any:
    return await client.post("/v1/ai/completions", json={"prompt": "Summarise.", **extra})


def _first(body: dict[str, Any]) -> tuple[str, str | None]:
    attempt = body["attempts"][0]
    return attempt["provider"], attempt["error_type"]


async def _breaker_state(client: Client, provider: str = "groq") -> str:
    report = (await client.get("/health/ai-providers")).json()
    return next(p for p in report["providers"] if p["provider"] == provider)["breaker_state"]


async def test_breaker_opens_skips_and_one_trial_closes_it(sandbox: Sandbox) -> None:
    clock = ManualClock()
    settings = sandbox_settings(
        sandbox.base_url,
        groq=_groq(sandbox, breaker_fail_max=3, breaker_reset_timeout_s=30),
    )
    sandbox.chaos("groq", error_rate=1.0, error_status=503)
    # A real server: the in-process test client would serialise the concurrent burst.
    with live_server(create_app(settings, manual_clock(clock))) as url:
        async with httpx.AsyncClient(
            base_url=url, trust_env=False, timeout=10, headers=AUTH_HEADERS
        ) as client:
            await _breaker_scenario(client, sandbox, clock)


async def _breaker_scenario(client: Any, sandbox: Sandbox, clock: ManualClock) -> None:
    for _ in range(3):
        body = (await _ask(client)).json()
        assert body["provider"] == "gemini"
    assert await _breaker_state(client) == "open"
    # While open, groq is skipped at once and receives nothing.
    for _ in range(10):
        body = (await _ask(client)).json()
        assert body["provider"] == "gemini"
        assert _first(body) == ("groq", "circuit_open")
    assert sandbox.completions("groq") == 3

    # Groq recovers, slowly enough that a burst arrives while the trial is in flight.
    sandbox.chaos("groq", latency_ms=400)
    clock.advance(30)
    bodies = [r.json() for r in await asyncio.gather(*(_ask(client) for _ in range(20)))]
    assert sandbox.completions("groq") == 4  # exactly one trial call
    assert sum(b["provider"] == "groq" for b in bodies) == 1
    assert sum(_first(b) == ("groq", "circuit_open") for b in bodies) == 19
    assert await _breaker_state(client) == "closed"
    assert (await _ask(client)).json()["provider"] == "groq"


async def test_failed_trial_reopens_for_another_reset_timeout(sandbox: Sandbox) -> None:
    clock = ManualClock()
    settings = sandbox_settings(
        sandbox.base_url, groq=_groq(sandbox, breaker_fail_max=2, breaker_reset_timeout_s=10)
    )
    sandbox.chaos("groq", error_rate=1.0, error_status=500)
    async with gateway_client(create_app(settings, manual_clock(clock))) as client:
        for _ in range(2):
            await _ask(client)
        clock.advance(10)
        body = (await _ask(client)).json()
        assert _first(body) == ("groq", "upstream_error")  # the trial, failed
        assert await _breaker_state(client) == "open"
        clock.advance(9)
        assert _first((await _ask(client)).json()) == ("groq", "circuit_open")
    assert sandbox.completions("groq") == 3


async def test_callers_bad_requests_and_rate_limits_do_not_trip_the_breaker(
    sandbox: Sandbox,
) -> None:
    settings = sandbox_settings(
        sandbox.base_url, groq=_groq(sandbox, breaker_fail_max=2, api_keys=GROQ_KEYS[:1])
    )
    async with gateway_client(create_app(settings)) as client:
        sandbox.chaos("groq", error_rate=1.0, error_status=400)
        for _ in range(4):
            assert (await _ask(client)).status_code == 400
        sandbox.chaos("groq", missing_models=["llama-3.1-8b-instant", "gemma2-9b-it"])
        for _ in range(4):
            assert (await _ask(client)).json()["provider"] == "gemini"
        assert await _breaker_state(client) == "closed"


async def test_hang_is_cut_at_the_adaptive_timeout_and_breaker_opens(sandbox: Sandbox) -> None:
    settings = sandbox_settings(
        sandbox.base_url,
        groq=_groq(sandbox, breaker_fail_max=2, breaker_reset_timeout_s=0.5),
        ai_timeout_min_samples=5,
        ai_timeout_min_s=0.25,
    )
    async with gateway_client(create_app(settings)) as client:
        for _ in range(5):  # warm up: fast answers teach a short timeout
            assert (await _ask(client)).json()["provider"] == "groq"
        report = (await client.get("/health/ai-providers")).json()
        groq = next(p for p in report["providers"] if p["provider"] == "groq")
        assert groq["timeout_s"] == 0.25  # p95 x 1.5 of ~ms latencies, clamped to the min

        sandbox.chaos("groq", hang=True)
        for _ in range(2):
            body = (await _ask(client)).json()
            assert body["provider"] == "gemini"
            assert _first(body) == ("groq", "timeout")
            assert 240 <= body["attempts"][0]["latency_ms"] < 1000
            assert body["latency_ms"] < 1500
        assert await _breaker_state(client) == "open"
        skipped = (await _ask(client)).json()
        assert _first(skipped) == ("groq", "circuit_open")

        sandbox.clear("groq")
        await asyncio.sleep(0.6)  # the real reset timeout (0.5 s) passes
        assert (await _ask(client)).json()["provider"] == "groq"
        assert await _breaker_state(client) == "closed"
        metrics = (await client.get("/metrics")).text
    assert 'ai_provider_circuit_breaker_state{provider="groq"} 0.0' in metrics
    assert 'outcome="timeout"' in metrics


async def test_retry_after_is_honoured_when_no_other_provider_is_left(sandbox: Sandbox) -> None:
    settings = Settings(
        ai_provider_priority="groq",
        groq=_groq(sandbox, api_keys=GROQ_KEYS[:1]),
    )
    sandbox.chaos("groq", fail_next=1, error_status=429, retry_after=0.5)
    async with gateway_client(create_app(settings)) as client:
        body = (await _ask(client)).json()
    assert body["provider"] == "groq"
    assert [a["error_type"] for a in body["attempts"]] == ["rate_limited", None]
    assert body["latency_ms"] >= 500
    assert sandbox.completions("groq") == 2


async def test_no_retry_of_a_provider_while_another_is_available(sandbox: Sandbox) -> None:
    settings = sandbox_settings(sandbox.base_url, groq=_groq(sandbox))
    sandbox.chaos("groq", error_rate=1.0, error_status=503)
    async with gateway_client(create_app(settings)) as client:
        for _ in range(4):
            assert (await _ask(client)).json()["provider"] == "gemini"
    assert sandbox.completions("groq") == 4


async def test_retries_stay_within_the_retry_budget(sandbox: Sandbox) -> None:
    settings = Settings(
        ai_provider_priority="groq",
        groq=_groq(sandbox, breaker_fail_max=1000),
        ai_retry_max=3,
        ai_retry_base_s=0.001,
        ai_retry_cap_s=0.002,
        ai_retry_budget_ratio=0.2,
        ai_retry_budget_min=2,
    )
    sandbox.chaos("groq", error_rate=1.0, error_status=503)
    requests = 30
    async with gateway_client(create_app(settings)) as client:
        for _ in range(requests):
            response = await _ask(client)
            assert response.status_code == 503
            assert response.headers["retry-after"]
        metrics = (await client.get("/metrics")).text
    calls = sandbox.completions("groq")
    # Without a budget 30 requests x (1 + 3 retries) = 120 calls; the budget allows 20 %.
    assert requests < calls <= requests + max(2, int(requests * 0.2))
    assert f'ai_provider_retries_total{{provider="groq"}} {float(calls - requests)}' in metrics


async def test_client_side_rate_limit_moves_on_at_once(sandbox: Sandbox) -> None:
    settings = sandbox_settings(
        sandbox.base_url, groq=_groq(sandbox, api_keys=GROQ_KEYS[:2], rpm_per_key=2)
    )
    async with gateway_client(create_app(settings)) as client:
        providers = [(await _ask(client)).json() for _ in range(6)]
    assert [b["provider"] for b in providers] == ["groq"] * 4 + ["gemini"] * 2
    assert _first(providers[-1]) == ("groq", "rate_limited_locally")
    assert providers[-1]["attempts"][0]["latency_ms"] == 0
    assert sandbox.completions("groq") == 4
    assert sandbox.stats()["groq"]["by_key"] == {"gsk-sandbox-1": 2, "gsk-sandbox-2": 2}
