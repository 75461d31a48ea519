"""The HTTP contract: bad input, health, OpenAPI, and the OpenAI-compatible route."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from litestar.testing import AsyncTestClient

from app.core.settings import Settings
from app.main import create_app
from tests.support.client import AUTH_HEADERS, CALLER_KEY, gateway_client
from tests.support.live import live_server
from tests.support.sandbox import Sandbox

Client = AsyncTestClient[Any]


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"messages": []}, "messages"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "exactly one"),
        ({"prompt": "x" * 200_001}, "limit"),
        ({"prompt": "x", "temperature": 2.5}, "temperature"),
        ({"prompt": "x", "temperature": -0.1}, "temperature"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "max_tokens": 100_000}, "max_tokens"),
        ({"prompt": "x", "model": "fastest"}, "unknown model"),
        ({"prompt": "x", "intent": "gossip"}, "intent"),
        ({"prompt": "x", "strategy": "cheapest"}, "strategy"),
        ({"prompt": "x", "colour": "blue"}, "colour"),
        ({"messages": [{"role": "system", "content": "only system"}]}, "user"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
    ],
)
async def test_bad_input_is_a_400_problem_and_calls_no_upstream(
    client: Client, sandbox: Sandbox, body: dict[str, Any], mentions: str
) -> None:
    response = await client.post("/v1/ai/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    assert mentions.lower() in response.text.lower()
    assert (
        sum(p.get("completions", 0) for p in sandbox.stats().values() if isinstance(p, dict)) == 0
    )


async def test_malformed_json_is_a_400(client: Client) -> None:
    response = await client.post(
        "/v1/ai/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_unknown_route_is_a_404_problem(client: Client) -> None:
    response = await client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["type"].endswith("/not-found")


async def test_health(client: Client) -> None:
    assert (await client.get("/health/live")).json()["status"] == "ok"
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["providers_configured"] == ["groq", "gemini", "azure", "openai"]


async def test_not_ready_without_any_provider() -> None:
    async with gateway_client(create_app(Settings())) as client:
        ready = await client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"


async def test_openapi_document_lists_the_routes(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert {"/v1/ai/completions", "/v1/chat/completions", "/health/live", "/health/ready"} <= set(
        schema["paths"]
    )


@pytest.fixture
def live(settings: Settings) -> Iterator[str]:
    with live_server(create_app(settings)) as url:
        yield url


def test_openai_sdk_works_unchanged(live: str, sandbox: Sandbox) -> None:
    client = openai.OpenAI(base_url=f"{live}/v1", api_key=CALLER_KEY, max_retries=0)
    reply = client.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a model organism."},
        ],
        temperature=0.2,
        max_tokens=30,
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.model_extra is not None
    assert reply.model_extra["provider"] == "openai"
    assert sandbox.last("openai")["json"]["messages"][1]["content"] == "Name a model organism."


def test_openai_sdk_alias_and_json_mode(live: str, sandbox: Sandbox) -> None:
    client = openai.OpenAI(base_url=f"{live}/v1", api_key=CALLER_KEY, max_retries=0)
    reply = client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Give JSON."}]}],
        response_format={"type": "json_object"},
    )
    assert reply.choices[0].message.content
    assert sandbox.last("groq")["json"]["response_format"] == {"type": "json_object"}


def test_openai_sdk_streaming(live: str) -> None:
    client = openai.OpenAI(base_url=f"{live}/v1", api_key=CALLER_KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "Stream please."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)


def test_openai_sdk_sees_typed_errors(live: str, sandbox: Sandbox) -> None:
    client = openai.OpenAI(base_url=f"{live}/v1", api_key=CALLER_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="gpt-4o-mini", messages=[], temperature=0.1)
    assert bad.value.body is not None
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "x"}], temperature=3
        )
    for provider in ("groq", "gemini", "azure", "openai"):
        sandbox.chaos(provider, error_rate=1.0, error_status=503)
    with pytest.raises(openai.InternalServerError) as down:
        client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}])
    assert down.value.status_code == 503
    assert down.value.response.headers.get("retry-after")


def test_openai_error_shape(live: str) -> None:
    response = httpx.post(
        f"{live}/v1/chat/completions",
        json={"model": "fast", "messages": [{"role": "user", "content": "x"}], "n": 3},
        headers=AUTH_HEADERS,
        trust_env=False,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= error.keys()
    assert error["type"] == "invalid_request_error"
