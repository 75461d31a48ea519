"""X-Request-ID end to end: kept or made, returned on every response (errors, 404s and
streams included), in both error bodies, and in every ledger row of that request."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.core.settings import Settings
from app.main import create_app
from tests.support.client import AUTH_HEADERS, gateway_client
from tests.support.ledger import ledger_rows
from tests.support.sandbox import Sandbox, sandbox_settings

Client = AsyncTestClient[Any]
ASK = {"messages": [{"role": "user", "content": "What is base editing?"}]}
GENERATED = re.compile(r"[0-9a-f]{32}")


async def test_a_callers_id_comes_back_and_is_in_every_ledger_row_of_that_request(
    settings: Settings, sandbox: Sandbox
) -> None:
    sandbox.chaos("groq", error_rate=1.0, error_status=503)  # a failed try, then a fallback
    async with gateway_client(create_app(settings)) as client:
        answer = await client.post(
            "/v1/ai/completions", json=ASK, headers={"X-Request-ID": "pipeline-42.run:7"}
        )
        other = await client.post("/v1/ai/completions", json=ASK)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == "pipeline-42.run:7"
    made = other.headers["x-request-id"]
    assert GENERATED.fullmatch(made)
    rows = ledger_rows(settings.database_url)
    ours = [r for r in rows if r["request_id"] == "pipeline-42.run:7"]
    assert {r["provider"] for r in ours} >= {"groq", "gemini"}  # the failure and the answer
    assert {r["request_id"] for r in rows} == {"pipeline-42.run:7", made}


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc-123", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("bad id", False),
        ("", False),
        ("id\u00e9", False),
    ],
)
async def test_an_unsafe_id_is_replaced_not_trimmed(client: Client, sent: str, kept: bool) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": sent.encode()})
    got = response.headers["x-request-id"]
    if kept:
        assert got == sent
    else:
        assert GENERATED.fullmatch(got)


async def test_every_error_carries_the_id_in_its_header_and_body(
    client: Client, sandbox: Sandbox
) -> None:
    rid = {"X-Request-ID": "err-1"}
    unauthorized = await client.post(
        "/v1/ai/completions", json=ASK, headers={**rid, "Authorization": "Bearer nope"}
    )
    missing = await client.get("/no/such/route", headers=rid)
    too_large = await client.post(
        "/v1/ai/completions",
        content=b'{"messages": "' + b"x" * (3 * 1024 * 1024) + b'"}',
        headers={**rid, "content-type": "application/json"},
    )
    invalid = await client.post("/v1/ai/completions", json={"messages": []}, headers=rid)
    for provider in ("groq", "gemini", "azure", "openai"):
        sandbox.chaos(provider, error_rate=1.0, error_status=503)
    down = await client.post("/v1/ai/completions", json=ASK, headers=rid)
    openai_down = await client.post(
        "/v1/chat/completions", json={"model": "fast", **ASK}, headers=rid
    )
    statuses = []
    for response in (unauthorized, missing, too_large, invalid, down, openai_down):
        statuses.append(response.status_code)
        assert response.headers["x-request-id"] == "err-1", response.status_code
        body = response.json()
        assert (body.get("error") or body)["request_id"] == "err-1", body
    assert statuses[:3] == [401, 404, 413]
    assert statuses[3] in (400, 422)
    assert statuses[4:] == [503, 503]


async def test_the_caller_rate_limit_answer_carries_the_id(sandbox: Sandbox) -> None:
    settings = sandbox_settings(sandbox.base_url, gateway_caller_rpm=1)
    async with gateway_client(create_app(settings)) as client:
        await client.get("/v1/budgets")
        limited = await client.get("/v1/budgets", headers={"X-Request-ID": "rl-1"})
    assert limited.status_code == 429
    assert limited.headers["x-request-id"] == "rl-1"
    assert limited.json()["request_id"] == "rl-1"


async def test_a_stream_carries_the_id_and_books_it(settings: Settings) -> None:
    async with (
        gateway_client(create_app(settings)) as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "fast", "stream": True, **ASK},
            headers={"X-Request-ID": "stream-1", **AUTH_HEADERS},
        ) as response,
    ):
        assert response.headers["x-request-id"] == "stream-1"
        assert "data:" in "".join([chunk async for chunk in response.aiter_text()])
    assert {r["request_id"] for r in ledger_rows(settings.database_url)} == {"stream-1"}
