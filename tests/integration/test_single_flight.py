"""Single-flight shares an answer, never one caller's own failure.

Identical concurrent requests share one upstream call. When the leader fails for reasons of
its own (its deadline here), a follower makes its own attempt instead of inheriting the
leader's 504; a failure of the upstream itself is still shared; and a follower waits no
longer than its own deadline. Real concurrency (uvicorn on loopback), the sandbox's latency
chaos, and upstream calls counted at the sandbox, the far side of the network.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.main import create_app
from tests.support.live import live_server
from tests.support.sandbox import Sandbox, sandbox_settings

ALICE_KEY = "alice-caller-key-0001"
BOB_KEY = "bob-caller-key-0002"
KEYS = {"alice": ALICE_KEY, "bob": BOB_KEY}
ALICE = {"Authorization": f"Bearer {ALICE_KEY}"}
BOB = {"Authorization": f"Bearer {BOB_KEY}"}
PROMPT = {"prompt": "Summarise the trial in one line.", "temperature": 0}
PROVIDERS = ("groq", "gemini", "azure", "openai")
UPSTREAM_LATENCY_MS = 600


def _calls(sandbox: Sandbox) -> int:
    """Completions every provider of the sandbox received."""
    stats = sandbox.stats()
    return sum(int(stats.get(p, {}).get("completions", 0)) for p in PROVIDERS)


async def _gateway(sandbox: Sandbox, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = sandbox_settings(
        sandbox.base_url, gateway_api_keys=KEYS, gateway_caller_rpm=None, **overrides
    )
    with live_server(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as client:
            yield client


@pytest.fixture
async def shared(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway whose cache is shared between callers (AI_CACHE_SCOPE=shared)."""
    async for client in _gateway(sandbox, ai_cache_scope="shared"):
        yield client


@pytest.fixture
async def per_caller(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with the default cache scope (one caller's requests share)."""
    async for client in _gateway(sandbox):
        yield client


async def _later(delay_s: float, request: Any) -> httpx.Response:
    await asyncio.sleep(delay_s)
    response: httpx.Response = await request
    return response


async def test_a_follower_does_not_inherit_the_leaders_deadline(
    sandbox: Sandbox, shared: httpx.AsyncClient
) -> None:
    """Alice leads with a 0.2 s deadline against a 600 ms upstream; Bob asks the same 50 ms
    later with no deadline. Alice's 504 is hers: Bob gets an answer of his own."""
    sandbox.chaos("groq", latency_ms=UPSTREAM_LATENCY_MS)
    alice, bob = await asyncio.gather(
        shared.post("/v1/ai/completions", json=PROMPT | {"timeout_s": 0.2}, headers=ALICE),
        _later(0.05, shared.post("/v1/ai/completions", json=PROMPT, headers=BOB)),
    )
    assert alice.status_code == 504, alice.text
    assert alice.json()["type"].endswith("/deadline-exceeded")
    assert bob.status_code == 200, bob.text
    assert bob.json()["cached"] is False
    assert bob.json()["provider"] == "groq"
    assert _calls(sandbox) == 2  # Alice's cut-short call and Bob's own


async def test_one_callers_requests_with_different_deadlines(
    sandbox: Sandbox, per_caller: httpx.AsyncClient
) -> None:
    """In the default caller scope, one caller's identical requests share: the one with a
    tiny deadline leads and fails; the other, without, still gets its answer."""
    sandbox.chaos("groq", latency_ms=UPSTREAM_LATENCY_MS)
    hurried, patient = await asyncio.gather(
        per_caller.post("/v1/ai/completions", json=PROMPT | {"timeout_s": 0.2}, headers=ALICE),
        _later(0.05, per_caller.post("/v1/ai/completions", json=PROMPT, headers=ALICE)),
    )
    assert hurried.status_code == 504, hurried.text
    assert patient.status_code == 200, patient.text
    assert patient.json()["cached"] is False
    assert _calls(sandbox) == 2


async def test_an_upstream_failure_is_still_shared(
    sandbox: Sandbox, shared: httpx.AsyncClient
) -> None:
    """Every provider failing is a fact about the request, not about its leader: the
    follower shares the leader's 503 (the same attempts, to the millisecond) and the
    upstreams see only the leader's calls."""
    for provider in PROVIDERS:
        sandbox.chaos(provider, latency_ms=300, error_rate=1.0, error_status=503)
    alice, bob = await asyncio.gather(
        shared.post("/v1/ai/completions", json=PROMPT, headers=ALICE),
        _later(0.05, shared.post("/v1/ai/completions", json=PROMPT, headers=BOB)),
    )
    assert (alice.status_code, bob.status_code) == (503, 503)
    assert bob.json()["type"].endswith("/all-providers-failed")
    attempts = alice.json()["attempts"]
    assert bob.json()["attempts"] == attempts
    assert _calls(sandbox) == sum(a["outcome"] != "skipped" for a in attempts) >= len(PROVIDERS)


async def test_a_follower_waits_no_longer_than_its_own_deadline(
    sandbox: Sandbox, shared: httpx.AsyncClient
) -> None:
    """Alice leads without a deadline; Bob follows with 0.2 s. Bob's 504 comes at his
    deadline, not when Alice's answer arrives; Alice's call goes on and answers her."""
    sandbox.chaos("groq", latency_ms=UPSTREAM_LATENCY_MS)

    async def bob_asks() -> tuple[httpx.Response, float]:
        await asyncio.sleep(0.05)
        started = time.monotonic()
        response = await shared.post(
            "/v1/ai/completions", json=PROMPT | {"timeout_s": 0.2}, headers=BOB
        )
        return response, time.monotonic() - started

    alice, (bob, bob_waited) = await asyncio.gather(
        shared.post("/v1/ai/completions", json=PROMPT, headers=ALICE), bob_asks()
    )
    assert alice.status_code == 200, alice.text
    assert bob.status_code == 504, bob.text
    assert bob_waited < UPSTREAM_LATENCY_MS / 1000 - 0.15
    assert _calls(sandbox) == 1
