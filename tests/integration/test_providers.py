"""Each adapter against the sandbox: wire format, auth header, token counts."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.support.sandbox import AZURE_KEY, GEMINI_KEY, OPENAI_KEY, Sandbox

Client = AsyncTestClient[Any]


@pytest.mark.parametrize(
    ("model", "provider", "path_end", "key"),
    [
        ("groq/llama-3.1-8b-instant", "groq", "/groq/openai/v1/chat/completions", "gsk-sandbox-1"),
        ("openai/gpt-4o-mini", "openai", "/openai/v1/chat/completions", OPENAI_KEY),
        (
            "azure/gpt-4o-mini",
            "azure",
            "/azure/openai/deployments/gpt-4o-mini/chat/completions",
            AZURE_KEY,
        ),
        (
            "gemini/gemini-1.5-flash",
            "gemini",
            "/gemini/v1beta/models/gemini-1.5-flash:generateContent",
            GEMINI_KEY,
        ),
    ],
)
async def test_each_adapter_speaks_its_wire_format(
    client: Client, sandbox: Sandbox, model: str, provider: str, path_end: str, key: str
) -> None:
    response = await client.post(
        "/v1/ai/completions",
        json={
            "prompt": "What is CRISPR?",
            "system": "Answer briefly.",
            "model": model,
            "temperature": 0.3,
            "max_tokens": 50,
            "json_mode": True,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provider"] == provider
    assert body["attempts"][-1]["outcome"] == "success"
    last = sandbox.last(provider)
    assert last["path"] == path_end
    assert last["key_used"] == key
    sent = last["json"]
    if provider == "gemini":
        assert sent["systemInstruction"]["parts"][0]["text"] == "Answer briefly."
        assert sent["contents"] == [{"role": "user", "parts": [{"text": "What is CRISPR?"}]}]
        assert sent["generationConfig"] == {
            "temperature": 0.3,
            "maxOutputTokens": 50,
            "responseMimeType": "application/json",
        }
    else:
        assert sent["messages"] == [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is CRISPR?"},
        ]
        assert sent["temperature"] == 0.3
        assert sent["max_tokens"] == 50
        assert sent["response_format"] == {"type": "json_object"}
    if provider == "azure":
        assert last["query"]["api-version"]
        assert "model" not in sent
    # Token counts are the upstream's, not an estimate: the sandbox reports what it counted.
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] == last["usage"]["prompt_tokens"]
    assert usage["completion_tokens"] == last["usage"]["completion_tokens"]


async def test_cost_comes_from_real_tokens_and_the_price_table(client: Client) -> None:
    response = await client.post(
        "/v1/ai/completions", json={"prompt": "Hello there", "model": "openai/gpt-4o-mini"}
    )
    body = response.json()
    expected = (
        body["usage"]["prompt_tokens"] * 0.15 + body["usage"]["completion_tokens"] * 0.60
    ) / 1e6
    assert body["cost_usd"] == pytest.approx(expected)
    free = (await client.post("/v1/ai/completions", json={"prompt": "Hello"})).json()
    assert free["provider"] == "groq"
    assert free["cost_usd"] == 0


async def test_messages_with_history_map_to_gemini_roles(client: Client, sandbox: Sandbox) -> None:
    response = await client.post(
        "/v1/ai/completions",
        json={
            "model": "gemini/gemini-1.5-flash",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Summarise."},
            ],
        },
    )
    assert response.status_code == 200
    roles = [c["role"] for c in sandbox.last("gemini")["json"]["contents"]]
    assert roles == ["user", "model", "user"]


@pytest.mark.parametrize(
    "model",
    [
        "groq/llama-3.1-8b-instant",
        "openai/gpt-4o-mini",
        "azure/gpt-4o-mini",
        "gemini/gemini-1.5-flash",
    ],
)
async def test_gzip_answers_are_decoded(client: Client, sandbox: Sandbox, model: str) -> None:
    """The real APIs gzip when asked; a raw read would hand compressed bytes to the parser."""
    provider = model.split("/")[0]
    sandbox.chaos(provider, gzip=True, content="Decoded through gzip.")
    response = await client.post("/v1/ai/completions", json={"prompt": "Hi", "model": model})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provider"] == provider
    assert body["content"] == "Decoded through gzip."
    assert body["usage"]["prompt_tokens"] == sandbox.last(provider)["usage"]["prompt_tokens"]


async def test_a_gzip_bomb_is_cut_at_the_decoded_cap(client: Client, sandbox: Sandbox) -> None:
    """A few kB on the wire that decode to more than the 8 MiB cap: a bad response, not OOM."""
    sandbox.chaos("groq", gzip=True, content="a" * (9 * 1024 * 1024))
    response = await client.post(
        "/v1/ai/completions", json={"prompt": "Hi", "model": "groq/llama-3.1-8b-instant"}
    )
    assert response.status_code == 503, response.text
    attempts = response.json()["attempts"]
    assert {a["error_type"] for a in attempts} == {"bad_response"}
