"""Two replicas (real `python -m app serve` processes) against one real Redis and the
sandbox: a breaker opened through one is open on the other within a second, half-open makes
exactly one trial call across both, an answer cached through one is a hit through the other,
and with Redis gone each replica carries on alone (ready, degraded, `ai_shared_state_up` 0).

Real time is unavoidable here (two processes, Redis' own clock): reset timeouts are short
and every wait is bounded."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import AUTH_HEADERS
from tests.support.redis import RedisServer, needs_redis
from tests.support.sandbox import Sandbox, fresh_database_url
from tests.support.service import ServiceProcess, sandbox_env

pytestmark = needs_redis

FAIL_MAX = 3
RESET_S = 3.0


def _replicas(sandbox: Sandbox, redis: RedisServer, tmp_path: Path, **extra: str) -> Any:
    env = sandbox_env(
        sandbox.base_url,
        fresh_database_url(),
        REDIS_URL=redis.url,
        REDIS_KEY_PREFIX=f"t{uuid.uuid4().hex[:8]}:",  # nothing left by another test
        # Two services, the sandbox, Redis and the test share two cores: a 50 ms timeout
        # missed under that load marks Redis lost for a moment (paid budgets then wait, a
        # breaker decides alone). A stopped Redis still fails at once (connection refused).
        REDIS_TIMEOUT_S="0.5",
        GROQ_BREAKER_FAIL_MAX=str(FAIL_MAX),
        GROQ_BREAKER_RESET_TIMEOUT_S=str(RESET_S),
        # Probes would take the half-open trial themselves: only calls do here.
        AI_HEALTH_PROBE_INTERVAL_S="3600",
        **extra,
    )
    return (
        ServiceProcess(env, log_path=tmp_path / "a.log"),
        ServiceProcess(env, log_path=tmp_path / "b.log"),
    )


@pytest.fixture
def replicas(
    sandbox: Sandbox, redis: RedisServer, tmp_path: Path
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    a, b = _replicas(sandbox, redis, tmp_path)
    a.start()
    try:
        b.start()
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


def _client(service: ServiceProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=service.url, headers=AUTH_HEADERS, timeout=20, trust_env=False
    )


async def _ask(client: httpx.AsyncClient, prompt: str, **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/ai/completions", json={"prompt": prompt, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _breaker(client: httpx.AsyncClient, provider: str = "groq") -> str:
    report = (await client.get("/health/ai-providers")).json()
    state: str = next(p for p in report["providers"] if p["provider"] == provider)["breaker_state"]
    return state


async def _wait_breaker(client: httpx.AsyncClient, state: str, within_s: float) -> float:
    """Seconds until the replica reports `state`; fails after `within_s`."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if await _breaker(client) == state:
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise AssertionError(f"breaker not {state} within {within_s}s (is {await _breaker(client)})")


async def _trip(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """FAIL_MAX groq faults through `client`, each failed over (or answered 503 when no
    other provider may take it: paid ones are held while the budget cannot be shared)."""
    sandbox.chaos("groq", error_rate=1.0, error_status=503)
    for i in range(FAIL_MAX):
        response = await client.post("/v1/ai/completions", json={"prompt": f"trip {i}"})
        body = response.json()
        assert response.status_code in (200, 503), response.text
        assert (body["attempts"][0]["provider"], body["attempts"][0]["error_type"]) == (
            "groq",
            "upstream_error",
        )
    assert await _breaker(client) == "open"


def _first(body: dict[str, Any]) -> tuple[str, str | None]:
    attempt = body["attempts"][0]
    return attempt["provider"], attempt["error_type"]


async def test_a_breaker_opened_through_one_replica_is_open_on_the_other_within_a_second(
    replicas: tuple[ServiceProcess, ServiceProcess], sandbox: Sandbox
) -> None:
    a, b = replicas
    async with _client(a) as client_a, _client(b) as client_b:
        assert await _breaker(client_b) == "closed"
        await _trip(client_a, sandbox)
        tripped_calls = sandbox.completions("groq")
        assert tripped_calls == FAIL_MAX
        # From the moment A answered the tripping request, B sends groq nothing: a second of
        # traffic to B only, counted at the sandbox.
        bodies: list[dict[str, Any]] = []
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            bodies.extend(
                await asyncio.gather(*(_ask(client_b, f"to b {len(bodies) + i}") for i in range(4)))
            )
        assert sandbox.completions("groq") == tripped_calls
        assert len(bodies) >= 8
        assert all(b["provider"] == "gemini" for b in bodies)
        assert all(_first(b) == ("groq", "circuit_open") for b in bodies)
        assert await _breaker(client_b) == "open"


async def test_half_open_makes_exactly_one_trial_call_across_both_replicas(
    replicas: tuple[ServiceProcess, ServiceProcess], sandbox: Sandbox
) -> None:
    a, b = replicas
    async with _client(a) as client_a, _client(b) as client_b:
        await _trip(client_a, sandbox)
        await _wait_breaker(client_b, "open", 1.0)
        before = sandbox.completions("groq")
        # Groq is back, slowly: the trial is still in flight while both replicas get traffic.
        sandbox.chaos("groq", latency_ms=2500)
        await asyncio.sleep(RESET_S + 0.2)

        # Both replicas get a request every 50 ms for 1.2 s, each sent without waiting for
        # the ones before (the trial takes 2.5 s; nothing is sent after it ends).
        sent: list[asyncio.Task[dict[str, Any]]] = []
        for tick in range(24):
            for name, client in (("a", client_a), ("b", client_b)):
                sent.append(asyncio.create_task(_ask(client, f"{name} {tick}")))
            await asyncio.sleep(0.05)
        assert sandbox.completions("groq") == before + 1  # one trial, still in flight
        answered = await asyncio.gather(*sent)
        assert sandbox.completions("groq") == before + 1
        assert sum(body["provider"] == "groq" for body in answered) == 1
        assert sum(_first(body) == ("groq", "circuit_open") for body in answered) == 47
        # The trial's success closes the breaker on both replicas.
        await _wait_breaker(client_a, "closed", 1.0)
        await _wait_breaker(client_b, "closed", 1.0)


async def test_an_answer_cached_through_one_replica_is_a_hit_through_the_other(
    replicas: tuple[ServiceProcess, ServiceProcess], sandbox: Sandbox
) -> None:
    a, b = replicas
    async with _client(a) as client_a, _client(b) as client_b:
        first = await _ask(client_a, "cache me across replicas", cache=True)
        assert first["cached"] is False
        calls = sandbox.completions(first["provider"])
        again = await _ask(client_b, "cache me across replicas", cache=True)
        assert again["cached"] is True
        assert again["content"] == first["content"]
        assert sandbox.completions(first["provider"]) == calls  # no new upstream call


def _gauge(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return float(family.samples[0].value)
    raise AssertionError(f"{name} not exported")


async def _wait_shared(client: httpx.AsyncClient, status: str, within_s: float) -> None:
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        report = (await client.get("/health/ai-providers")).json()
        if report["shared_state"] == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"shared_state never {status}")


async def test_without_redis_each_replica_carries_on_alone_ready_and_degraded(
    replicas: tuple[ServiceProcess, ServiceProcess], sandbox: Sandbox, redis: RedisServer
) -> None:
    a, b = replicas
    async with _client(a) as client_a, _client(b) as client_b:
        report = (await client_a.get("/health/ai-providers")).json()
        assert report["shared_state"] == "ok"
        assert _gauge((await client_a.get("/metrics")).text, "ai_shared_state_up") == 1.0
        redis.stop()
        await _wait_shared(client_a, "degraded", 5.0)
        await _wait_shared(client_b, "degraded", 5.0)
        assert _gauge((await client_a.get("/metrics")).text, "ai_shared_state_up") == 0.0
        for client in (client_a, client_b):
            assert (await client.get("/health/ready")).status_code == 200

        # Cache: per replica, never an error (an answer cached by B is not A's).
        first = await _ask(client_b, "cached locally", cache=True)
        second = await _ask(client_b, "cached locally", cache=True)
        assert (first["cached"], second["cached"]) == (False, True)
        calls = sandbox.completions("groq")
        elsewhere = await _ask(client_a, "cached locally", cache=True)
        assert elsewhere["cached"] is False
        assert sandbox.completions("groq") == calls + 1

        # Breakers: A's trip stays A's.
        await _trip(client_a, sandbox)
        sandbox.clear("groq")
        before = sandbox.completions("groq")
        body = await _ask(client_b, "b still asks groq")
        assert body["provider"] == "groq"
        assert sandbox.completions("groq") == before + 1
        assert await _breaker(client_b) == "closed"
        assert await _breaker(client_a) == "open"

        redis.start()  # back, empty
        await _wait_shared(client_a, "ok", 5.0)
        assert _gauge((await client_a.get("/metrics")).text, "ai_shared_state_up") == 1.0
