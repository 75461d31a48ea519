"""`stream: true` on /v1/chat/completions: the upstream's pieces are passed on as they arrive,
every failure before the first text fails over, a fault after it ends the stream with an
error event, and the end of a stream books real tokens, cost and ledger rows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.settings import Settings
from app.main import create_app
from tests.support.client import AUTH_HEADERS, CALLER_KEY
from tests.support.ledger import ledger_rows
from tests.support.live import live_server
from tests.support.sandbox import Sandbox, sandbox_settings

ANSWER = "Base editing changes one letter of DNA without cutting both strands."


@pytest.fixture
def live(settings: Settings) -> Iterator[str]:
    with live_server(create_app(settings)) as url:
        yield url


def _sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=CALLER_KEY, max_retries=0)


def _ask(base_url: str, model: str) -> list[Any]:
    stream = _sdk(base_url).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is base editing?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    return list(stream)


def _texts(chunks: list[Any]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("groq/llama-3.1-8b-instant", "groq"),
        ("openai/gpt-4o-mini", "openai"),
        ("azure/gpt-4o-mini", "azure"),
        ("gemini/gemini-1.5-flash", "gemini"),
    ],
)
def test_each_provider_streams_piece_by_piece_with_its_own_token_counts(
    live: str, sandbox: Sandbox, model: str, provider: str
) -> None:
    sandbox.chaos(provider, content=ANSWER)
    chunks = _ask(live, model)
    texts = _texts(chunks)
    assert "".join(texts) == ANSWER
    assert len(texts) > 1  # passed on as the upstream sent it, not buffered into one
    assert chunks[0].choices[0].delta.role == "assistant"
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    last = sandbox.last(provider)
    if provider == "gemini":
        assert last["path"].endswith(":streamGenerateContent")
        assert last["query"]["alt"] == "sse"
    else:
        assert last["json"]["stream"] is True
        assert last["json"]["stream_options"] == {"include_usage": True}
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens == last["usage"]["prompt_tokens"]
    assert usage.completion_tokens == last["usage"]["completion_tokens"]
    metrics = httpx.get(f"{live}/metrics", trust_env=False).text
    first_text = {
        s.name: s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "ai_provider_time_to_first_token_seconds"
        for s in family.samples
        if s.labels.get("provider") == provider
    }
    assert first_text["ai_provider_time_to_first_token_seconds_count"] == 1
    assert first_text["ai_provider_time_to_first_token_seconds_sum"] > 0


def test_the_first_text_arrives_before_the_upstream_has_finished(
    live: str, sandbox: Sandbox
) -> None:
    """The upstream trickles its answer over 1.5 s; the caller sees text long before."""
    sandbox.chaos("groq", content=ANSWER, slow_body_ms=1500)
    body = {"model": "fast", "messages": [{"role": "user", "content": "x"}], "stream": True}
    started = time.monotonic()
    first_text_s = None
    with httpx.stream(
        "POST", f"{live}/v1/chat/completions", json=body, headers=AUTH_HEADERS, trust_env=False
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream"), response.read()
        for line in response.iter_lines():
            if first_text_s is None and '"content"' in line:
                first_text_s = time.monotonic() - started
    total_s = time.monotonic() - started
    assert first_text_s is not None
    assert total_s >= 1.3
    assert first_text_s < total_s - 0.5


def test_failures_before_the_first_text_fail_over(live: str, sandbox: Sandbox) -> None:
    sandbox.chaos("groq", error_rate=1.0, error_status=503)
    sandbox.chaos("gemini", content=ANSWER)
    chunks = _ask(live, "fast")
    assert "".join(_texts(chunks)) == ANSWER
    assert chunks[0].model_extra is not None
    assert chunks[0].model_extra["provider"] == "gemini"
    assert sandbox.stats()["groq"]["completions"] >= 1


def test_every_provider_down_is_the_same_typed_error_as_without_streaming(
    live: str, sandbox: Sandbox
) -> None:
    for provider in ("groq", "gemini", "azure", "openai"):
        sandbox.chaos(provider, error_rate=1.0, error_status=503)
    with pytest.raises(openai.InternalServerError) as down:
        _ask(live, "fast")
    assert down.value.status_code == 503
    assert down.value.response.headers.get("retry-after")


def test_a_fault_after_the_first_text_ends_the_stream_with_an_error_event(
    sandbox: Sandbox,
) -> None:
    """The request's 0.8 s deadline passes while the upstream is still trickling: the caller
    keeps the text it got, then an error event the SDK raises; the ledger books the attempt
    as the request's deadline (no verdict on the provider: its health keeps no failure) with
    the tokens generated so far."""
    settings = sandbox_settings(sandbox.base_url, ai_request_deadline_s=0.8)
    sandbox.chaos("openai", content=ANSWER * 4, slow_body_ms=3000)
    received: list[str] = []
    with live_server(create_app(settings)) as url:
        stream = _sdk(url).chat.completions.create(
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
        )

        def read_all() -> None:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)

        with pytest.raises(openai.APIError) as failed:
            read_all()
        health = httpx.get(f"{url}/health/ai-providers", timeout=5, trust_env=False).json()
    assert received  # text came before the fault
    assert "caller_deadline" in str(failed.value)
    openai_health = next(p for p in health["providers"] if p["provider"] == "openai")
    assert not openai_health["error_rate"]  # the deadline was ours, not the provider's fault
    rows = [r for r in ledger_rows(settings.database_url) if r["provider"] == "openai"]
    assert len(rows) == 1
    assert (rows[0]["outcome"], rows[0]["error_type"]) == ("error", "caller_deadline")
    assert rows[0]["completion_tokens"] > 0
    assert rows[0]["cost_usd"] > 0


def test_a_finished_stream_is_booked_like_an_answer(sandbox: Sandbox) -> None:
    settings = sandbox_settings(sandbox.base_url)
    sandbox.chaos("openai", content=ANSWER)
    with live_server(create_app(settings)) as url:
        chunks = _ask(url, "openai/gpt-4o-mini")
        budgets = httpx.get(f"{url}/v1/budgets", headers=AUTH_HEADERS, trust_env=False).json()
    usage = chunks[-1].usage
    expected = (usage.prompt_tokens * 0.15 + usage.completion_tokens * 0.60) / 1e6
    rows = ledger_rows(settings.database_url)
    assert len(rows) == 1
    row = rows[0]
    assert (row["provider"], row["outcome"], row["status_code"]) == ("openai", "success", 200)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert row["cost_usd"] == pytest.approx(expected)
    assert json.loads(row["metadata"])["attempt"] == 1
    openai_budget = next(b for b in budgets["budgets"] if b["budget"] == "openai")
    assert openai_budget["spent_usd"] == pytest.approx(expected, abs=1e-9)
    assert openai_budget["reserved_usd"] == 0


def test_a_caller_who_leaves_mid_stream_is_billed_for_what_was_generated(
    sandbox: Sandbox,
) -> None:
    settings = sandbox_settings(sandbox.base_url)
    sandbox.chaos("openai", content=ANSWER * 4, slow_body_ms=3000)
    body = {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
    }
    with live_server(create_app(settings)) as url:
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers=AUTH_HEADERS, trust_env=False
        ) as response:
            for line in response.iter_lines():
                if '"content"' in line:
                    break  # leave after the first text
        held = None
        for _ in range(100):  # the server notices the closed connection on its own time
            budgets = httpx.get(f"{url}/v1/budgets", headers=AUTH_HEADERS, trust_env=False).json()
            held = next(b for b in budgets["budgets"] if b["budget"] == "openai")["reserved_usd"]
            if held == 0:
                break
            time.sleep(0.05)
    assert held == 0  # the reservation was settled, not left hanging
    rows = [r for r in ledger_rows(settings.database_url) if r["provider"] == "openai"]
    assert [(r["outcome"], r["error_type"]) for r in rows] == [("error", "cancelled")]
    assert rows[0]["completion_tokens"] > 0
    assert rows[0]["cost_usd"] > 0
