"""`serve` logs JSON lines (uvicorn's own included): one access line per request with its
route, status, caller, duration, provider, model, tokens, cost, cache, request id and trace
ids; never a prompt, an answer or a key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.support.client import CALLER_KEY
from tests.support.otlp_receiver import otlp_receiver
from tests.support.sandbox import GROQ_KEYS, OPENAI_KEY, Sandbox, fresh_database_url
from tests.support.service import ServiceProcess, sandbox_env

SECRET_PROMPT = "zebra-quartz-7781 is my private question"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _run(tmp_path: Path, sandbox: Sandbox, **env: str) -> tuple[str, list[httpx.Response]]:
    service = ServiceProcess(
        sandbox_env(sandbox.base_url, fresh_database_url(), LOG_LEVEL="INFO", **env),
        log_path=tmp_path / "service.log",
    )
    service.start()
    responses = []
    try:
        with httpx.Client(base_url=service.url, trust_env=False, timeout=30) as client:
            responses.append(
                client.post(
                    "/v1/ai/completions",
                    json={"messages": [{"role": "user", "content": SECRET_PROMPT}]},
                    headers={
                        "Authorization": f"Bearer {CALLER_KEY}",
                        "X-Request-ID": "logged-1",
                        "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
                    },
                )
            )
            responses.append(
                client.get("/v1/budgets", headers={"Authorization": "Bearer wrong-key-123"})
            )
    finally:
        service.stop()
    return service.logs(), responses


def _never_leaks(logs: str, answer: str) -> None:
    for secret in (SECRET_PROMPT, "zebra-quartz", CALLER_KEY, "wrong-key-123", OPENAI_KEY, answer):
        assert secret not in logs, secret
    for key in GROQ_KEYS:
        assert key not in logs


def test_every_line_is_json_and_the_access_line_says_what_happened(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    with otlp_receiver() as receiver:
        logs, (answered, refused) = _run(
            tmp_path, sandbox, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint
        )
    assert answered.status_code == 200, answered.text
    assert refused.status_code == 401
    lines: list[dict[str, Any]] = [json.loads(line) for line in logs.splitlines() if line]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's own, as JSON
    access = [line for line in lines if line["logger"] == "app.access"]
    by_id = {line["request_id"]: line for line in access}
    ok = by_id["logged-1"]
    assert ok["route"] == "/v1/ai/completions"
    assert (ok["method"], ok["status"], ok["caller"]) == ("POST", 200, "tests")
    assert ok["duration_ms"] > 0
    assert ok["provider"] == answered.json()["provider"]
    assert ok["model"] == answered.json()["model"]
    assert ok["prompt_tokens"] > 0
    assert ok["completion_tokens"] > 0
    assert ok["cost_usd"] >= 0
    assert ok["cache"] == "miss"
    assert ok["trace_id"] == TRACE_ID
    assert len(ok["span_id"]) == 16
    denied = by_id[refused.headers["x-request-id"]]
    assert (denied["route"], denied["status"], denied["caller"]) == ("/v1/budgets", 401, None)
    assert "provider" not in denied
    _never_leaks(logs, answered.json()["content"])


def test_text_format_on_request(tmp_path: Path, sandbox: Sandbox) -> None:
    logs, (answered, _) = _run(tmp_path, sandbox, LOG_FORMAT="text")
    access = [line for line in logs.splitlines() if "logger=app.access" in line]
    ours = next(line for line in access if "request_id=logged-1" in line)
    assert "route=/v1/ai/completions status=200 caller=tests" in ours
    assert "cache=miss" in ours
    assert not logs.lstrip().startswith("{")
    _never_leaks(logs, answered.json()["content"])
