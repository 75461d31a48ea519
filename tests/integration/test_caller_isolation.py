"""One caller never reads another's traffic: cached answers, shared in-flight calls, budgets.

Two callers (GATEWAY_API_KEYS) against the real app and the sandbox; upstream calls are
counted at the sandbox, the far side of the network.
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.main import create_app
from tests.support.client import gateway_client
from tests.support.sandbox import Sandbox, sandbox_settings

ALICE_KEY = "alice-caller-key-0001"
BOB_KEY = "bob-caller-key-0002"
ADMIN_KEY = "admin-caller-key-0003"
KEYS = {"alice": ALICE_KEY, "bob": BOB_KEY, "ops": ADMIN_KEY}
ALICE = {"Authorization": f"Bearer {ALICE_KEY}"}
BOB = {"Authorization": f"Bearer {BOB_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
PROMPT = {"prompt": "Summarise the trial in one line.", "temperature": 0}


def _settings(sandbox: Sandbox, **overrides: Any) -> Any:
    return sandbox_settings(sandbox.base_url, gateway_api_keys=KEYS, **overrides)


async def test_bob_does_not_get_alices_cached_answer(sandbox: Sandbox) -> None:
    async with gateway_client(create_app(_settings(sandbox))) as client:
        sandbox.chaos("groq", content="alice's private answer")
        alice = (await client.post("/v1/ai/completions", json=PROMPT, headers=ALICE)).json()
        sandbox.clear("groq")
        bob = (await client.post("/v1/ai/completions", json=PROMPT, headers=BOB)).json()
        again = (await client.post("/v1/ai/completions", json=PROMPT, headers=ALICE)).json()
    assert alice["content"] == "alice's private answer"
    assert bob["cached"] is False
    assert "alice" not in bob["content"]
    assert sandbox.completions("groq") == 2
    # Alice's own repeat is still served from her cache.
    assert (again["cached"], again["content"]) == (True, alice["content"])


async def test_shared_scope_shares_one_upstream_call(sandbox: Sandbox) -> None:
    async with gateway_client(create_app(_settings(sandbox, ai_cache_scope="shared"))) as client:
        alice = (await client.post("/v1/ai/completions", json=PROMPT, headers=ALICE)).json()
        bob = (await client.post("/v1/ai/completions", json=PROMPT, headers=BOB)).json()
    assert (alice["cached"], bob["cached"]) == (False, True)
    assert bob["content"] == alice["content"]
    assert sandbox.completions("groq") == 1


async def test_callers_never_share_a_call_in_flight(sandbox: Sandbox) -> None:
    sandbox.chaos("groq", latency_ms=300)  # both requests are in flight at once
    async with gateway_client(create_app(_settings(sandbox))) as client:
        alice, bob = await asyncio.gather(
            client.post("/v1/ai/completions", json=PROMPT, headers=ALICE),
            client.post("/v1/ai/completions", json=PROMPT, headers=BOB),
        )
    assert (alice.json()["cached"], bob.json()["cached"]) == (False, False)
    assert sandbox.completions("groq") == 2


async def test_a_call_in_flight_is_shared_in_shared_scope(sandbox: Sandbox) -> None:
    sandbox.chaos("groq", latency_ms=300)
    async with gateway_client(create_app(_settings(sandbox, ai_cache_scope="shared"))) as client:
        alice, bob = await asyncio.gather(
            client.post("/v1/ai/completions", json=PROMPT, headers=ALICE),
            client.post("/v1/ai/completions", json=PROMPT, headers=BOB),
        )
    assert sorted([alice.json()["cached"], bob.json()["cached"]]) == [False, True]
    assert sandbox.completions("groq") == 1


async def test_quality_never_gets_a_cached_fast_answer(sandbox: Sandbox) -> None:
    async with gateway_client(create_app(_settings(sandbox))) as client:
        fast = (
            await client.post("/v1/ai/completions", json=PROMPT | {"model": "fast"}, headers=ALICE)
        ).json()
        quality = (
            await client.post(
                "/v1/ai/completions", json=PROMPT | {"model": "quality"}, headers=ALICE
            )
        ).json()
    assert quality["cached"] is False
    assert quality["model"] != fast["model"]
    assert sandbox.completions("groq") == 2


async def test_a_strategy_never_gets_another_strategys_answer(sandbox: Sandbox) -> None:
    async with gateway_client(create_app(_settings(sandbox))) as client:
        answers = [
            (
                await client.post(
                    "/v1/ai/completions", json=PROMPT | {"strategy": strategy}, headers=ALICE
                )
            ).json()
            for strategy in ("priority", "cost", "priority")
        ]
    assert [a["cached"] for a in answers] == [False, False, True]
    assert sandbox.completions("groq") == 2


async def test_budgets_show_a_caller_only_its_own_and_the_shared_ones(sandbox: Sandbox) -> None:
    settings = _settings(
        sandbox,
        daily_budget_usd_per_caller=1.0,
        daily_budget_usd_total=5.0,
        gateway_admin_callers=["ops"],
        ai_provider_priority="openai",  # paid, so spend shows in the budgets
    )
    async with gateway_client(create_app(settings)) as client:
        await client.post("/v1/ai/completions", json={"prompt": "bob's question"}, headers=BOB)
        alice = await client.get("/v1/budgets", headers=ALICE)
        admin = await client.get("/v1/budgets", headers=ADMIN)
    assert alice.status_code == admin.status_code == 200
    seen = {b["budget"] for b in alice.json()["budgets"]}
    assert seen == {"groq", "gemini", "azure", "openai", "total", "caller:alice"}
    assert "bob" not in alice.text
    assert "ops" not in alice.text
    everything = {b["budget"]: b for b in admin.json()["budgets"]}
    assert {"caller:alice", "caller:bob", "caller:ops", "total", "openai"} <= set(everything)
    assert everything["caller:bob"]["spent_usd"] > 0
    assert everything["caller:alice"]["spent_usd"] == 0
