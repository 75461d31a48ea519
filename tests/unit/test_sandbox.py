"""The sandbox upstreams: wire shapes, auth, chaos faults and counters.

Each test runs its own sandbox in-process on 127.0.0.1 (port 0) and talks to it
over real HTTP, so routing, headers and connection-level faults are exercised.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
import pytest_asyncio

from infra.sandbox import SandboxThread, start_sandbox
from infra.sandbox.process import spawn_sandbox

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from infra.sandbox import SandboxServer

GROQ = "/groq/openai/v1/chat/completions"
OPENAI = "/openai/v1/chat/completions"
AZURE = "/azure/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
GEMINI = "/gemini/v1beta/models/gemini-1.5-flash:generateContent"

GROQ_AUTH = {"Authorization": "Bearer gsk-sandbox-1"}
OPENAI_AUTH = {"Authorization": "Bearer sk-sandbox-openai"}
AZURE_AUTH = {"api-key": "azure-sandbox-key"}
GEMINI_AUTH = {"x-goog-api-key": "gemini-sandbox-key"}


def chat(
    model: str = "llama-3.1-8b-instant", text: str = "Is this abstract relevant?"
) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def gemini_body(text: str = "Is this abstract relevant?") -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[SandboxServer]:
    server = await start_sandbox("127.0.0.1", 0)
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def client(upstream: SandboxServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=upstream.base_url, trust_env=False, timeout=5) as c:
        yield c


async def put_chaos(client: httpx.AsyncClient, provider: str, **config: Any) -> None:
    response = await client.put(f"/_chaos/{provider}", json=config)
    assert response.status_code == 200, response.text


# -- happy paths -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_groq_completion_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(GROQ, headers=GROQ_AUTH, json=chat())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "x-ratelimit-remaining-requests" in response.headers
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "llama-3.1-8b-instant"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content == "[sandbox:groq/llama-3.1-8b-instant] Is this abstract relevant?"
    usage = body["usage"]
    assert usage["prompt_tokens"] == len("Is this abstract relevant?") // 4 + 4
    assert usage["completion_tokens"] == len(content) // 4 + 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["x_groq"]["id"].startswith("req_")


@pytest.mark.asyncio
async def test_openai_json_mode_and_max_tokens(client: httpx.AsyncClient) -> None:
    request = {**chat("gpt-4o-mini", "hi"), "response_format": {"type": "json_object"}}
    response = await client.post(OPENAI, headers=OPENAI_AUTH, json={**request, "max_tokens": 2})
    assert response.status_code == 200
    body = response.json()
    answer = json.loads(body["choices"][0]["message"]["content"])
    assert answer == {"provider": "openai", "model": "gpt-4o-mini", "echo": "hi"}
    assert body["usage"]["completion_tokens"] == 2


@pytest.mark.asyncio
async def test_azure_completion_probe_and_api_version(client: httpx.AsyncClient) -> None:
    body = {"messages": [{"role": "user", "content": "hello"}]}
    response = await client.post(AZURE, headers=AZURE_AUTH, json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["model"] == "gpt-4o-mini"
    assert data["choices"][0]["message"]["content"] == "[sandbox:azure/gpt-4o-mini] hello"
    assert "prompt_filter_results" in data

    no_version = AZURE.split("?")[0]
    missing = await client.post(no_version, headers=AZURE_AUTH, json=body)
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "404", "message": "Resource not found"}}

    unknown = await client.post(AZURE.replace("gpt-4o-mini", "nope"), headers=AZURE_AUTH, json=body)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "DeploymentNotFound"

    listing = await client.get(
        "/azure/openai/deployments", params={"api-version": "2022-12-01"}, headers=AZURE_AUTH
    )
    assert listing.status_code == 200
    deployment = listing.json()["data"][0]
    assert deployment["id"] == "gpt-4o-mini"
    assert deployment["status"] == "succeeded"
    assert deployment["object"] == "deployment"


@pytest.mark.asyncio
async def test_gemini_generate_content_with_colon_route(client: httpx.AsyncClient) -> None:
    request = {
        **gemini_body("hello"),
        "systemInstruction": {"parts": [{"text": "be terse"}]},
        "generationConfig": {"responseMimeType": "application/json", "maxOutputTokens": 50},
    }
    response = await client.post(GEMINI, headers=GEMINI_AUTH, json=request)
    assert response.status_code == 200
    body = response.json()
    candidate = body["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    assert candidate["content"]["role"] == "model"
    assert json.loads(candidate["content"]["parts"][0]["text"])["echo"] == "hello"
    meta = body["usageMetadata"]
    assert meta["totalTokenCount"] == meta["promptTokenCount"] + meta["candidatesTokenCount"]
    assert body["modelVersion"] == "gemini-1.5-flash"

    models = await client.get("/gemini/v1beta/models", headers=GEMINI_AUTH)
    names = [m["name"] for m in models.json()["models"]]
    assert "models/gemini-1.5-flash" in names

    unknown = await client.post(
        GEMINI.replace("gemini-1.5-flash", "gemini-0"), headers=GEMINI_AUTH, json=gemini_body()
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["status"] == "NOT_FOUND"


@pytest.mark.asyncio
async def test_official_sdk_parses_completion_stream_and_rate_limit(
    upstream: SandboxServer, client: httpx.AsyncClient
) -> None:
    sdk = openai.AsyncOpenAI(
        base_url=upstream.base_urls["groq"],
        api_key="gsk-sandbox-2",
        http_client=client,
        max_retries=0,
    )
    stream = await sdk.chat.completions.create(
        model="gemma2-9b-it",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    assert text == "[sandbox:groq/gemma2-9b-it] stream please"
    assert usage is not None
    assert usage.total_tokens > 0

    await put_chaos(client, "groq", rate_limited_keys=["gsk-sandbox-2"], retry_after=4)
    with pytest.raises(openai.RateLimitError) as caught:
        await sdk.chat.completions.create(
            model="gemma2-9b-it", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "4"


# -- auth and validation -------------------------------------------------------------

AUTH_CASES = [
    (GROQ, {"Authorization": "Bearer wrong"}, chat(), 401),
    (OPENAI, {"Authorization": "Bearer wrong"}, chat("gpt-4o"), 401),
    (AZURE, {"api-key": "wrong"}, chat("gpt-4o-mini"), 401),
    (GEMINI, {"x-goog-api-key": "wrong"}, gemini_body(), 400),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "headers", "body", "status"), AUTH_CASES)
async def test_wrong_key_is_rejected_in_provider_shape(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], body: Any, status: int
) -> None:
    response = await client.post(path, headers=headers, json=body)
    assert response.status_code == status
    error = response.json()["error"]
    if path == GEMINI:
        assert error["status"] == "INVALID_ARGUMENT"
        assert error["message"] == "API key not valid. Please pass a valid API key."
    elif path == AZURE:
        assert error["code"] == "401"
    else:
        assert error["code"] == "invalid_api_key"


@pytest.mark.asyncio
async def test_missing_messages_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        GROQ, headers=GROQ_AUTH, json={"model": "llama-3.1-8b-instant", "messages": []}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"


# -- chaos -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rate_limited_key_gets_429_with_retry_after(client: httpx.AsyncClient) -> None:
    await put_chaos(client, "groq", rate_limited_keys=["gsk-sandbox-1"], retry_after=7)
    limited = await client.post(GROQ, headers=GROQ_AUTH, json=chat())
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "7"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    other = await client.post(GROQ, headers={"Authorization": "Bearer gsk-sandbox-3"}, json=chat())
    assert other.status_code == 200


@pytest.mark.asyncio
async def test_gzip_only_when_set_and_accepted(client: httpx.AsyncClient) -> None:
    plain = await client.post(GROQ, headers=GROQ_AUTH, json=chat())
    assert "content-encoding" not in plain.headers
    await put_chaos(client, "groq", gzip=True)
    gzipped = await client.post(GROQ, headers={**GROQ_AUTH, "Accept-Encoding": "gzip"}, json=chat())
    assert gzipped.headers["content-encoding"] == "gzip"
    assert gzipped.json()["choices"][0]["message"]["content"]  # httpx decodes it
    identity = await client.post(
        GROQ, headers={**GROQ_AUTH, "Accept-Encoding": "identity"}, json=chat()
    )
    assert "content-encoding" not in identity.headers


@pytest.mark.asyncio
async def test_rpm_per_key_limits_each_key_separately(client: httpx.AsyncClient) -> None:
    await put_chaos(client, "gemini", rpm_per_key=2)
    statuses = [
        (await client.post(GEMINI, headers=GEMINI_AUTH, json=gemini_body())).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    over = await client.post(GEMINI, headers=GEMINI_AUTH, json=gemini_body())
    assert over.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert 1 <= int(over.headers["retry-after"]) <= 60


@pytest.mark.asyncio
async def test_outage_window_then_recovery(client: httpx.AsyncClient) -> None:
    await put_chaos(client, "openai", down_for_s=0.3, retry_after=2)
    down = await client.post(OPENAI, headers=OPENAI_AUTH, json=chat("gpt-4o"))
    assert down.status_code == 503
    assert down.headers["retry-after"] == "2"
    assert down.json()["error"]["type"] == "server_error"
    await asyncio.sleep(0.35)
    up = await client.post(OPENAI, headers=OPENAI_AUTH, json=chat("gpt-4o"))
    assert up.status_code == 200


@pytest.mark.asyncio
async def test_hang_never_answers_and_is_cancellable(
    upstream: SandboxServer, client: httpx.AsyncClient
) -> None:
    await put_chaos(client, "groq", hang=True)
    call = asyncio.create_task(client.post(GROQ, headers=GROQ_AUTH, json=chat()))
    await asyncio.sleep(0.3)
    assert not call.done()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    with pytest.raises(httpx.ReadTimeout):
        await client.post(GROQ, headers=GROQ_AUTH, json=chat(), timeout=0.2)
    stats = (await client.get("/_stats")).json()["groq"]
    assert stats["by_status"]["hang"] == 2
    started = time.monotonic()
    await upstream.stop()  # a hung handler must not hold up shutdown
    assert time.monotonic() - started < 1.0


@pytest.mark.asyncio
async def test_reset_closes_the_connection_without_a_response(client: httpx.AsyncClient) -> None:
    await put_chaos(client, "azure", reset=True)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await client.post(AZURE, headers=AZURE_AUTH, json=chat("gpt-4o-mini"))
    await put_chaos(client, "azure")
    healthy = await client.post(AZURE, headers=AZURE_AUTH, json=chat("gpt-4o-mini"))
    assert healthy.status_code == 200


@pytest.mark.asyncio
async def test_successful_but_broken_answers(client: httpx.AsyncClient) -> None:
    await put_chaos(client, "groq", malformed=True)
    malformed = await client.post(GROQ, headers=GROQ_AUTH, json=chat())
    assert malformed.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        malformed.json()

    await put_chaos(client, "groq", wrong_content_type=True)
    html = await client.post(GROQ, headers=GROQ_AUTH, json=chat())
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")

    await put_chaos(client, "groq", empty=True)
    empty = await client.post(GROQ, headers=GROQ_AUTH, json=chat())
    assert empty.json()["choices"] == []

    await put_chaos(client, "groq", content='{"verdict": "include"}')
    scripted = await client.post(GROQ, headers=GROQ_AUTH, json=chat())
    assert scripted.json()["choices"][0]["message"]["content"] == '{"verdict": "include"}'


@pytest.mark.asyncio
async def test_chaos_config_rejects_unknown_fields(client: httpx.AsyncClient) -> None:
    response = await client.put("/_chaos/groq", json={"latncy_ms": 5})
    assert response.status_code == 400
    assert (await client.put("/_chaos/nope", json={})).status_code == 404
    await client.put("/_chaos/groq", json={"latency_ms": 5})
    patched = await client.patch("/_chaos/groq", json={"error_rate": 0.5})
    assert patched.json()["latency_ms"] == 5
    assert patched.json()["error_rate"] == 0.5


# -- counters ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_counters_last_request_and_reset(client: httpx.AsyncClient) -> None:
    for key in ("gsk-sandbox-1", "gsk-sandbox-2", "gsk-sandbox-2"):
        await client.post(GROQ, headers={"Authorization": f"Bearer {key}"}, json=chat())
    await client.post(GROQ, headers={"Authorization": "Bearer bad"}, json=chat())
    await client.get("/groq/openai/v1/models", headers=GROQ_AUTH)

    groq = (await client.get("/_stats")).json()["groq"]
    assert groq["completions"] == 4
    assert groq["probes"] == 1
    assert groq["by_key"] == {"gsk-sandbox-1": 1, "gsk-sandbox-2": 2, "bad": 1}
    assert groq["by_model"] == {"llama-3.1-8b-instant": 4}
    assert groq["by_status"] == {"200": 3, "401": 1}

    last = (await client.get("/_last/groq")).json()
    assert last["key_used"] == "bad"
    assert last["json"]["model"] == "llama-3.1-8b-instant"
    await client.post(GROQ, headers={"Authorization": "Bearer gsk-sandbox-3"}, json=chat())
    last = (await client.get("/_last/groq")).json()
    assert last["key_used"] == "gsk-sandbox-3"
    assert "gsk-sandbox-3" not in json.dumps(last["headers"])
    assert last["headers"]["Authorization"] == "Bearer gsk-...-3"
    assert last["status"] == 200
    assert last["usage"]["prompt_tokens"] == len("Is this abstract relevant?") // 4 + 4

    await put_chaos(client, "groq", latency_ms=1)
    assert (await client.post("/_chaos/reset")).status_code == 200
    stats = (await client.get("/_stats")).json()
    assert all(s["completions"] == 0 and s["probes"] == 0 for s in stats.values())
    assert (await client.get("/_chaos")).json()["groq"]["latency_ms"] == 0
    assert (await client.get("/_last/groq")).status_code == 404


# -- ways to run it -----------------------------------------------------------------------


def test_cli_writes_port_file_and_exits_cleanly_on_sigterm() -> None:
    process, base_url = spawn_sandbox(timeout_s=20)  # `python -m infra.sandbox --port-file`
    try:
        health = httpx.get(f"{base_url}/_health", trust_env=False, timeout=5)
        assert health.json() == {"ok": True}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_threaded_sandbox_for_sync_callers() -> None:
    with SandboxThread() as sandbox:
        response = httpx.post(
            sandbox.base_urls["openai"] + "/chat/completions",
            headers=OPENAI_AUTH,
            json=chat("gpt-4o-mini"),
            trust_env=False,
        )
        assert response.status_code == 200
        assert response.json()["model"] == "gpt-4o-mini"
