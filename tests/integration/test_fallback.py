"""Model fallback, provider fallback, key rotation and the all-down answer."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.core.settings import GroqSettings, Settings
from app.main import create_app
from tests.support.client import gateway_client
from tests.support.sandbox import Sandbox, sandbox_settings

Client = AsyncTestClient[Any]


def _route(body: dict[str, Any]) -> list[tuple[str, str | None, str, str | None]]:
    return [(a["provider"], a["model"], a["outcome"], a["error_type"]) for a in body["attempts"]]


async def _ask(client: Client, **extra: Any) -> Any:
    return await client.post("/v1/ai/completions", json={"prompt": "Summarise.", **extra})


@pytest.mark.parametrize("fault", ["missing_models", "decommissioned_models"])
async def test_missing_model_moves_to_the_next_model_of_the_chain(
    client: Client, sandbox: Sandbox, fault: str
) -> None:
    sandbox.chaos("groq", **{fault: ["llama-3.1-8b-instant"]})
    response = await _ask(client)
    assert response.status_code == 200
    body = response.json()
    assert (body["provider"], body["model"]) == ("groq", "gemma2-9b-it")
    assert _route(body) == [
        ("groq", "llama-3.1-8b-instant", "error", "not_found"),
        ("groq", "gemma2-9b-it", "success", None),
    ]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_groq_5xx_fails_over_to_gemini(client: Client, sandbox: Sandbox, status: int) -> None:
    sandbox.chaos("groq", error_rate=1.0, error_status=status)
    body = (await _ask(client)).json()
    assert body["provider"] == "gemini"
    # A provider fault skips the rest of that provider's chain: one groq call, not two.
    assert _route(body)[0] == ("groq", "llama-3.1-8b-instant", "error", "upstream_error")
    assert sandbox.completions("groq") == 1


async def test_failover_order_follows_priority(client: Client, sandbox: Sandbox) -> None:
    for provider in ("groq", "gemini", "azure"):
        sandbox.chaos(provider, error_rate=1.0, error_status=503)
    body = (await _ask(client)).json()
    assert body["provider"] == "openai"
    assert [a[0] for a in _route(body)] == ["groq", "gemini", "azure", "openai"]


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ({"malformed": True}, "bad_response"),
        ({"empty": True}, "bad_response"),
        ({"wrong_content_type": True}, "bad_response"),
        ({"reset": True}, "connection"),
    ],
)
async def test_broken_answers_are_classified_and_failed_over(
    client: Client, sandbox: Sandbox, fault: dict[str, Any], kind: str
) -> None:
    sandbox.chaos("groq", **fault)
    response = await _ask(client)
    assert response.status_code == 200
    body = response.json()
    assert body["provider"] == "gemini"
    assert _route(body)[0][3] == kind


async def test_hung_provider_is_cut_at_its_timeout(sandbox: Sandbox) -> None:
    settings = sandbox_settings(
        sandbox.base_url,
        groq=GroqSettings(
            api_keys=["gsk-sandbox-1"], base_url=f"{sandbox.base_url}/groq/openai/v1", timeout_s=0.3
        ),
    )
    sandbox.chaos("groq", hang=True)
    async with gateway_client(create_app(settings)) as client:
        body = (await _ask(client)).json()
    assert body["provider"] == "gemini"
    first = body["attempts"][0]
    assert first["error_type"] == "timeout"
    assert 250 <= first["latency_ms"] < 1500


async def test_rate_limited_key_rests_and_the_next_key_is_used(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.chaos("groq", rate_limited_keys=["gsk-sandbox-1"], retry_after=30)
    first = (await _ask(client)).json()
    # 429 on key 1 for model 1 -> next model with key 2.
    assert _route(first) == [
        ("groq", "llama-3.1-8b-instant", "error", "rate_limited"),
        ("groq", "gemma2-9b-it", "success", None),
    ]
    for _ in range(6):
        assert (await _ask(client)).json()["provider"] == "groq"
    by_key = sandbox.stats()["groq"]["by_key"]
    # Key 1 is resting for 30 s: it was called once, the others share the rest round-robin.
    assert by_key.get("gsk-sandbox-1") == 1
    assert by_key.get("gsk-sandbox-2", 0) + by_key.get("gsk-sandbox-3", 0) == 7
    assert abs(by_key.get("gsk-sandbox-2", 0) - by_key.get("gsk-sandbox-3", 0)) <= 1


async def test_keys_are_used_round_robin(client: Client, sandbox: Sandbox) -> None:
    for _ in range(9):
        assert (await _ask(client)).status_code == 200
    by_key = sandbox.stats()["groq"]["by_key"]
    assert by_key == {"gsk-sandbox-1": 3, "gsk-sandbox-2": 3, "gsk-sandbox-3": 3}


async def test_refused_key_is_retired_and_never_used_again(sandbox: Sandbox) -> None:
    settings = sandbox_settings(
        sandbox.base_url,
        groq=GroqSettings(
            api_keys=["gsk-revoked-key", "gsk-sandbox-2"],
            base_url=f"{sandbox.base_url}/groq/openai/v1",
        ),
    )
    async with gateway_client(create_app(settings)) as client:
        first = (await _ask(client)).json()
        assert _route(first) == [
            ("groq", "llama-3.1-8b-instant", "error", "auth"),
            ("groq", "llama-3.1-8b-instant", "success", None),
        ]
        for _ in range(4):
            assert (await _ask(client)).json()["provider"] == "groq"
    assert sandbox.stats()["groq"]["by_key"].get("gsk-sandbox-2") == 5


async def test_provider_with_only_bad_keys_is_skipped(sandbox: Sandbox) -> None:
    settings = sandbox_settings(
        sandbox.base_url,
        groq=GroqSettings(api_key="gsk-revoked-key", base_url=f"{sandbox.base_url}/groq/openai/v1"),
    )
    async with gateway_client(create_app(settings)) as client:
        assert (await _ask(client)).json()["provider"] == "gemini"
        body = (await _ask(client)).json()
    assert body["provider"] == "gemini"
    assert _route(body)[0] == ("groq", "llama-3.1-8b-instant", "skipped", "no_key_available")
    assert sandbox.completions("groq") == 1


async def test_all_down_is_a_503_problem_with_retry_after(client: Client, sandbox: Sandbox) -> None:
    sandbox.chaos("groq", error_rate=1.0, error_status=429, retry_after=12)
    sandbox.chaos("gemini", error_rate=1.0, error_status=503)
    sandbox.chaos("azure", error_rate=1.0, error_status=500)
    sandbox.chaos("openai", error_rate=1.0, error_status=502)
    response = await _ask(client)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) >= 1
    problem = response.json()
    assert problem["type"].endswith("/all-providers-failed")
    assert problem["status"] == 503
    assert {p["provider"] for p in problem["providers"]} == {"groq", "gemini", "azure", "openai"}
    assert "Summarise." not in response.text
    for secret in ("gsk-sandbox", "sk-sandbox-openai", "azure-sandbox-key", "gemini-sandbox-key"):
        assert secret not in response.text


async def test_all_rate_limited_retry_after_is_the_soonest_key_wake_up(
    sandbox: Sandbox,
) -> None:
    settings = sandbox_settings(
        sandbox.base_url,
        groq=GroqSettings(api_key="gsk-sandbox-1", base_url=f"{sandbox.base_url}/groq/openai/v1"),
        ai_provider_priority="groq",
    )
    sandbox.chaos("groq", error_rate=1.0, error_status=429, retry_after=40)
    async with gateway_client(create_app(settings)) as client:
        response = await _ask(client)
    assert response.status_code == 503
    assert 38 <= int(response.headers["retry-after"]) <= 40


async def test_unconfigured_provider_is_reported_and_skipped(sandbox: Sandbox) -> None:
    settings = Settings(
        ai_provider_priority="groq,openai",
        openai=sandbox_settings(sandbox.base_url).openai,
    )
    async with gateway_client(create_app(settings)) as client:
        body = (await _ask(client)).json()
        ready = await client.get("/health/ready")
    assert body["provider"] == "openai"
    assert _route(body)[0] == ("groq", None, "skipped", "not_configured")
    assert ready.json()["providers_configured"] == ["openai"]


async def test_upstream_bad_request_goes_back_as_400_without_failover(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.chaos("groq", error_rate=1.0, error_status=400)
    response = await _ask(client)
    assert response.status_code == 400
    assert response.json()["type"].endswith("/upstream-rejected")
    assert sandbox.completions("gemini") == 0


async def test_pinned_model_the_provider_lacks_is_a_404(client: Client, sandbox: Sandbox) -> None:
    # A priced model (an unpriced one is refused before any call) the upstream says it lacks.
    sandbox.chaos("openai", missing_models=["gpt-4-turbo"])
    response = await _ask(client, model="openai/gpt-4-turbo")
    assert response.status_code == 404
    assert response.json()["type"].endswith("/model-not-found")
    assert sandbox.completions("openai") == 1
