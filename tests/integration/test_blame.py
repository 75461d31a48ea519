"""Shared guards blame the right party, end to end against the sandbox: a caller's own
deadline, our own connection pool and the size of what was asked say nothing about a
provider or a publisher host (ARCHITECTURE.md, "blame the right party"); and a 429 whose
Retry-After is longer than AI_RETRY_CAP_S is answered at once, not waited for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from app.core.clock import ManualClock
from app.core.settings import GroqSettings, LiteratureSettings, OpenAISettings
from app.main import create_app
from infra.sandbox.literature import hosts as h
from infra.sandbox.literature.client import LiteratureSandbox
from tests.support.client import AUTH_HEADERS, gateway_client
from tests.support.live import live_server
from tests.support.overrides import manual_clock
from tests.support.sandbox import GROQ_KEYS, OPENAI_KEY, Sandbox, sandbox_settings

PROVIDERS = ("groq", "gemini", "azure", "openai")
# A long answer: its tokens, and so its time under `latency_per_token_ms`, are set by the
# request's max_tokens (the sandbox caps the answer's usage at max_tokens).
LONG_ANSWER = "word " * 2000


async def _states(client: Any) -> dict[str, str]:
    report = (await client.get("/health/ai-providers")).json()
    return {p["provider"]: p["breaker_state"] for p in report["providers"]}


async def _until(done: Callable[[], bool]) -> None:
    """Wait (at most 10 s) until `done()`, e.g. the sandbox has counted calls in flight."""
    for _ in range(500):
        if done():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out waiting")


def _ask(**extra: Any) -> dict[str, Any]:
    return {"prompt": "Summarise the abstract in one sentence.", **extra}


async def test_tiny_caller_deadlines_leave_every_breaker_closed(sandbox: Sandbox) -> None:
    """200 requests whose own deadline (5 ms) is far below any provider's timeout: none of
    them is a verdict on a provider. Every breaker stays closed and a normal request is
    answered by the first provider."""
    for provider in PROVIDERS:
        sandbox.chaos(provider, latency_ms=40)
    settings = sandbox_settings(
        sandbox.base_url,
        # Groq's free-tier limit (30 a minute per key) would move the load on by itself.
        groq=GroqSettings(
            api_keys=GROQ_KEYS, base_url=f"{sandbox.base_url}/groq/openai/v1", rpm_per_key=10_000
        ),
    )
    statuses: list[int] = []
    async with gateway_client(create_app(settings)) as client:
        for _ in range(200):
            response = await client.post("/v1/ai/completions", json=_ask(timeout_s=0.005))
            statuses.append(response.status_code)
        assert set(await _states(client)) == set(PROVIDERS)
        assert set((await _states(client)).values()) == {"closed"}
        for provider in PROVIDERS:
            sandbox.clear(provider)
        normal = await client.post("/v1/ai/completions", json=_ask())
        metrics = (await client.get("/metrics")).text
    assert normal.status_code == 200, normal.text
    assert normal.json()["provider"] == "groq"
    assert set(statuses) <= {503, 504}
    assert statuses.count(504) > 100  # the deadline's own answer, at once
    assert 'outcome="caller_deadline"' in metrics


async def test_tiny_tier_timeouts_leave_the_host_breakers_closed(
    sandbox: Sandbox, lit: LiteratureSandbox
) -> None:
    """200 detections with `tier_timeout_s` 1 ms while Unpaywall and doi.org take 50 ms:
    the caller's deadline, not the hosts'. Their breakers stay closed, and the next normal
    detection finds the paper through Unpaywall. (The clock is manual, so every fetch gets
    exactly the 1 ms the caller allowed, and an open breaker would stay open.)"""
    clock = ManualClock()
    settings = sandbox_settings(
        sandbox.base_url,
        literature=LiteratureSettings(
            **lit.settings(cache_ttl_s=0, unpaywall_rpm=1_000_000, breaker_fail_max=5)
        ),
    )
    paper = lit.entry("up-publisher-pdf")["paper"]
    lit.fault(h.UNPAYWALL, latency_ms=50)
    lit.fault(h.DOI_RESOLVER, latency_ms=50)
    async with gateway_client(create_app(settings, manual_clock(clock))) as client:
        for _ in range(200):
            response = await client.post(
                "/v1/fulltext/detect",
                json={"paper": paper, "options": {"tier_timeout_s": 0.001, "skip_ai": True}},
            )
            assert response.status_code == 200, response.text
        assert lit.requests(h.UNPAYWALL) > 5  # the hosts were asked, and kept being asked
        assert lit.requests(h.DOI_RESOLVER) > 5
        lit.clear_fault(h.UNPAYWALL)
        lit.clear_fault(h.DOI_RESOLVER)
        result = (
            await client.post(
                "/v1/fulltext/detect", json={"paper": paper, "options": {"skip_ai": True}}
            )
        ).json()
        metrics = (await client.get("/metrics")).text
    assert (result["is_available"], result["tier"], result["method"]) == (
        True,
        4,
        "unpaywall_pdf",
    )
    assert 'literature_fetches_total{outcome="caller_deadline",publisher="unpaywall"}' in metrics


async def test_short_calls_do_not_set_the_timeout_of_long_ones(sandbox: Sandbox) -> None:
    """OpenAI takes 10 ms per output token. 40 calls asking for 5 tokens (50 ms) teach their
    own class a 1 s timeout (the floor); calls asking for 150 tokens take 1.5 s and must not
    be cut by it, nor open the breaker."""
    sandbox.chaos("openai", content=LONG_ANSWER, latency_per_token_ms=10)
    settings = sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="openai",
        openai=OpenAISettings(
            api_key=OPENAI_KEY,
            base_url=f"{sandbox.base_url}/openai/v1",
            breaker_fail_max=2,
        ),
    )
    async with gateway_client(create_app(settings)) as client:
        for _ in range(4):
            shorts = await asyncio.gather(
                *(
                    client.post("/v1/ai/completions", json=_ask(max_tokens=5, model="gpt-4o-mini"))
                    for _ in range(10)
                )
            )
            assert all(r.status_code == 200 for r in shorts)
        report = (await client.get("/health/ai-providers")).json()
        openai = next(p for p in report["providers"] if p["provider"] == "openai")
        assert openai["timeout_s"] == 1.0  # the short calls' class learned the floor
        longs = await asyncio.gather(
            *(
                client.post("/v1/ai/completions", json=_ask(max_tokens=150, model="gpt-4o-mini"))
                for _ in range(3)
            )
        )
        states = await _states(client)
    for response in longs:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["usage"]["completion_tokens"] == 150
        assert body["latency_ms"] >= 1400
    assert states["openai"] == "closed"


async def test_a_full_pool_is_ours_not_the_providers(sandbox: Sandbox) -> None:
    """OpenAI's pool has 2 connections, held by 2 long streams (3 s). Short calls wait at
    most AI_POOL_WAIT_S for a connection, then fail over (or, with no other provider, get a
    fast 503 with Retry-After); nothing is sent for them, the breaker stays closed and the
    wait is counted as our own saturation."""
    sandbox.chaos("openai", content=LONG_ANSWER, latency_per_token_ms=10)
    settings = sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="openai,gemini",
        ai_pool_wait_s=0.3,
        openai=OpenAISettings(
            api_key=OPENAI_KEY,
            base_url=f"{sandbox.base_url}/openai/v1",
            max_connections=2,
            breaker_fail_max=2,
        ),
    )
    stream = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Write at length."}],
        "max_tokens": 300,
        "stream": True,
    }
    with live_server(create_app(settings)) as url:
        async with httpx.AsyncClient(
            base_url=url, trust_env=False, timeout=30, headers=AUTH_HEADERS
        ) as client:
            held = [
                asyncio.create_task(client.post("/v1/chat/completions", json=stream))
                for _ in range(2)
            ]
            await _until(lambda: sandbox.completions("openai") >= 2)
            started = time.monotonic()
            shorts = await asyncio.gather(
                *(
                    client.post("/v1/ai/completions", json=_ask(max_tokens=5, model="fast"))
                    for _ in range(6)
                )
            )
            waited = time.monotonic() - started
            calls_while_full = sandbox.completions("openai")
            states = await _states(client)
            for task in held:
                response = await task
                assert response.status_code == 200
                assert "data: [DONE]" in response.text
            metrics = (await client.get("/metrics")).text
    assert waited < 1.5  # the pool wait (0.3 s), not a stream's 3 s nor the 15 s timeout
    for response in shorts:
        body = response.json()
        assert response.status_code == 200, body
        assert body["provider"] == "gemini"
        assert body["attempts"][0]["provider"] == "openai"
        assert body["attempts"][0]["error_type"] == "local_saturation"
    assert calls_while_full == 2  # nothing was sent for the short calls
    assert states["openai"] == "closed"
    assert 'ai_local_saturation_total{provider="openai"} 6.0' in metrics


async def test_a_full_pool_with_no_other_provider_is_a_fast_503(sandbox: Sandbox) -> None:
    sandbox.chaos("openai", content=LONG_ANSWER, latency_per_token_ms=10)
    settings = sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="openai",
        ai_pool_wait_s=0.3,
        openai=OpenAISettings(
            api_key=OPENAI_KEY, base_url=f"{sandbox.base_url}/openai/v1", max_connections=1
        ),
    )
    with live_server(create_app(settings)) as url:
        async with httpx.AsyncClient(
            base_url=url, trust_env=False, timeout=30, headers=AUTH_HEADERS
        ) as client:
            held = asyncio.create_task(
                client.post("/v1/ai/completions", json=_ask(max_tokens=200, model="gpt-4o-mini"))
            )
            await _until(lambda: sandbox.completions("openai") >= 1)
            started = time.monotonic()
            short = await client.post(
                "/v1/ai/completions", json=_ask(max_tokens=5, model="gpt-4o-mini")
            )
            waited = time.monotonic() - started
            assert (await held).status_code == 200
    assert waited < 1.5
    assert short.status_code == 503, short.text
    assert short.json()["type"].endswith("all-providers-failed")
    assert int(short.headers["retry-after"]) >= 1
    assert sandbox.completions("openai") == 1


async def test_a_long_retry_after_is_answered_not_waited_for(sandbox: Sandbox) -> None:
    """A pinned model's only key gets 429 with `Retry-After: 25`. 25 s is past
    AI_RETRY_CAP_S (5 s): the request is answered at once with a 503 carrying the upstream's
    Retry-After, not held 25 s for a retry. (A manual clock: a retry's wait would pass at once,
    so only the upstream's call count and the answer tell.)"""
    clock = ManualClock()
    settings = sandbox_settings(
        sandbox.base_url,
        ai_provider_priority="groq",
        groq=GroqSettings(
            api_keys=GROQ_KEYS[:1],
            base_url=f"{sandbox.base_url}/groq/openai/v1",
            rpm_per_key=10_000,
        ),
    )
    sandbox.chaos("groq", error_rate=1.0, error_status=429, retry_after=25)
    async with gateway_client(create_app(settings, manual_clock(clock))) as client:
        started = time.monotonic()
        response = await client.post("/v1/ai/completions", json=_ask(model="llama-3.1-8b-instant"))
        elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "25"
    assert sandbox.completions("groq") == 1  # no retry held the request
    assert elapsed < 5
