"""Traces exported over OTLP/HTTP to a loopback receiver that decodes them: a server span per
request in the caller's trace, one GenAI client span per upstream attempt (fallbacks are
siblings), budget and cache as events, literature tiers as spans; nothing when unset."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.core.settings import Settings
from app.core.tracing import Tracing, traces_endpoint
from app.main import create_app
from tests.support.client import gateway_client
from tests.support.otlp_receiver import ReceivedSpan, otlp_receiver
from tests.support.sandbox import Sandbox

ASK = {"messages": [{"role": "user", "content": "What is base editing?"}]}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def _traced(settings: Settings, endpoint: str) -> Settings:
    return settings.model_copy(update={"otel_exporter_otlp_endpoint": endpoint})


async def test_a_fallback_is_two_sibling_client_spans_under_the_callers_trace(
    settings: Settings, sandbox: Sandbox
) -> None:
    sandbox.chaos("groq", error_rate=1.0, error_status=503)
    with otlp_receiver() as receiver:
        async with gateway_client(create_app(_traced(settings, receiver.endpoint))) as client:
            response = await client.post(
                "/v1/ai/completions",
                json=ASK,
                headers={"traceparent": TRACEPARENT, "X-Request-ID": "traced-1"},
            )
        assert response.status_code == 200, response.text
        # The app's shutdown flushed the batch: everything is in.
        spans = receiver.wait_for(lambda s: any(x.is_server for x in s))
    ours = [s for s in spans if s.trace_id == TRACE_ID]
    server = next(s for s in ours if s.is_server)
    assert server.service == "literature-ai-gateway"
    assert server.parent_span_id == PARENT_ID  # the caller's span is the parent
    assert server.name == "POST /v1/ai/completions"
    assert server.attributes["http.route"] == "/v1/ai/completions"
    assert server.attributes["http.response.status_code"] == 200
    clients = [s for s in ours if s.is_client]
    assert [c.attributes["gen_ai.provider.name"] for c in clients] == ["groq", "gcp.gemini"]
    assert all(c.parent_span_id == server.span_id for c in clients)  # siblings
    failed, answered = clients
    assert failed.name == f"chat {failed.attributes['gen_ai.request.model']}"
    assert failed.error
    assert failed.attributes["error.type"] == "upstream_error"
    assert not answered.error
    assert answered.attributes["gen_ai.operation.name"] == "chat"
    assert answered.attributes["gen_ai.response.model"]
    assert answered.attributes["gen_ai.usage.input_tokens"] > 0
    assert answered.attributes["gen_ai.usage.output_tokens"] > 0
    assert answered.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    events = [name for name, _ in server.events]
    assert "gateway.cache" in events
    assert events.count("gateway.budget") >= 2  # one reservation per provider tried


async def test_a_streamed_answer_has_its_usage_on_its_client_span(settings: Settings) -> None:
    """A stream's token counts are known only at its end: its span ends there and carries them."""
    with otlp_receiver() as receiver:
        async with (
            gateway_client(create_app(_traced(settings, receiver.endpoint))) as client,
            client.stream(
                "POST",
                "/v1/chat/completions",
                json={"model": "fast", "stream": True, **ASK},
                headers={"traceparent": TRACEPARENT},
            ) as response,
        ):
            assert response.status_code == 200
            text = "".join([chunk async for chunk in response.aiter_text()])
        assert "[DONE]" in text
        spans = receiver.wait_for(lambda s: any(x.is_server for x in s))
    clients = [s for s in spans if s.trace_id == TRACE_ID and s.is_client]
    assert len(clients) == 1
    (streamed,) = clients
    assert not streamed.error
    assert streamed.attributes["gen_ai.usage.input_tokens"] > 0
    assert streamed.attributes["gen_ai.usage.output_tokens"] > 0
    assert streamed.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert "gateway.usage_estimated" not in streamed.attributes  # the upstream sent its counts


async def test_a_request_without_traceparent_starts_its_own_trace(settings: Settings) -> None:
    with otlp_receiver() as receiver:
        async with gateway_client(create_app(_traced(settings, receiver.endpoint))) as client:
            await client.get("/health/live")
            await client.get("/no/such/route")
        spans = receiver.wait_for(lambda s: len([x for x in s if x.is_server]) >= 2)
    servers = [s for s in spans if s.is_server]
    live = next(s for s in servers if s.attributes.get("http.route") == "/health/live")
    missing = next(s for s in servers if s.attributes["http.response.status_code"] == 404)
    assert live.parent_span_id == ""
    assert live.trace_id != missing.trace_id
    assert missing.name == "GET"  # no route matched: no template to name it after
    assert "http.route" not in missing.attributes


async def test_literature_tiers_are_spans_of_the_request(settings: Settings, lit: Any) -> None:
    with otlp_receiver() as receiver:
        async with gateway_client(create_app(_traced(settings, receiver.endpoint))) as client:
            response = await client.post(
                "/v1/fulltext/detect",
                json={"paper": {"doi": "10.5555/db.0001"}},
                headers={"traceparent": TRACEPARENT},
            )
        assert response.status_code == 200, response.text
        spans = receiver.wait_for(lambda s: any(x.is_server for x in s))
    ours = [s for s in spans if s.trace_id == TRACE_ID]
    server = next(s for s in ours if s.is_server)
    tiers: list[ReceivedSpan] = [s for s in ours if s.name.startswith("tier ")]
    assert tiers
    assert all(t.parent_span_id == server.span_id for t in tiers)
    assert all("literature.tier.outcome" in t.attributes for t in tiers)


def test_no_endpoint_no_tracer(settings: Settings) -> None:
    assert settings.otel_exporter_otlp_endpoint is None
    assert traces_endpoint(settings) is None
    assert Tracing.from_settings(settings) is None


def test_the_endpoints_are_read_as_the_standard_variables_say(settings: Settings) -> None:
    base = settings.model_copy(update={"otel_exporter_otlp_endpoint": "http://127.0.0.1:4318/"})
    assert traces_endpoint(base) == "http://127.0.0.1:4318/v1/traces"
    both = base.model_copy(
        update={"otel_exporter_otlp_traces_endpoint": "http://127.0.0.1:9/custom"}
    )
    assert traces_endpoint(both) == "http://127.0.0.1:9/custom"


def test_the_sdks_sampler_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our provider sets no sampler of its own, so OTEL_TRACES_SAMPLER can cut the cost."""
    scope = {"method": "GET", "path": "/health/live", "headers": []}
    for sampler, recorded in (("always_on", 1), ("always_off", 0)):
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
        exporter = InMemorySpanExporter()
        tracing = Tracing(SimpleSpanProcessor(exporter))
        span = tracing.server_span(scope)
        span.finish("/health/live", 200)
        span.detach()
        assert len(exporter.get_finished_spans()) == recorded, sampler
        tracing.shutdown()
