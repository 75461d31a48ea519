"""/metrics counts what callers were answered (http_server_request_duration_seconds by route
template, method and status), shows the process and the build, and says its content type
once."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.support.client import gateway_client
from tests.support.sandbox import Sandbox, sandbox_settings

ASK = {"messages": [{"role": "user", "content": "What is base editing?"}]}


def _samples(text: str) -> dict[str, list[Any]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _count(samples: list[Any], **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name.endswith("_count") and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_401_429_and_503_are_counted_by_route_and_status(sandbox: Sandbox) -> None:
    settings = sandbox_settings(sandbox.base_url, gateway_caller_rpm=2)
    for provider in ("groq", "gemini", "azure", "openai"):
        sandbox.chaos(provider, error_rate=1.0, error_status=503)
    async with gateway_client(create_app(settings)) as client:
        for _ in range(2):
            await client.get("/v1/budgets", headers={"Authorization": "Bearer wrong"})
        assert (await client.post("/v1/ai/completions", json=ASK)).status_code == 503
        await client.get("/v1/budgets")
        assert (await client.get("/v1/budgets")).status_code == 429
        await client.get("/no/such/route/12345")
        metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].count("charset") == 1
    durations = _samples(metrics.text)["http_server_request_duration_seconds"]
    route = "http_route"
    status = "http_response_status_code"
    assert _count(durations, **{route: "/v1/budgets", status: "401"}) == 2
    assert _count(durations, **{route: "/v1/budgets", status: "429"}) == 1
    assert _count(durations, **{route: "/v1/ai/completions", status: "503"}) == 1
    assert _count(durations, **{route: "/v1/ai/completions", "http_request_method": "POST"}) == 1
    # A path no route matched is counted with an empty route: callers make no label values.
    unmatched = [s for s in durations if s.labels.get(status) == "404"]
    assert unmatched
    assert all(s.labels.get(route, "") == "" for s in unmatched)
    assert not any("12345" in str(s.labels) for s in durations)


async def test_process_and_build_metrics_are_exported(client: Any) -> None:
    families = _samples((await client.get("/metrics")).text)
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"):
        assert families[name][0].value > 0, name
    assert "python_gc_collections" in families
    (build,) = families["gateway_build_info"]
    assert build.value == 1
    assert build.labels["version"]
    assert build.labels["commit"]
