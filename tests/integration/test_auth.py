"""Callers: bearer keys on every /v1 route, open health and metrics, per-caller limits."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import openai
import pytest
from litestar.testing import AsyncTestClient

from app.core.settings import Settings
from app.main import ConfigurationError, create_app
from tests.support.client import CALLER_KEY, gateway_client
from tests.support.live import live_server
from tests.support.sandbox import ROOT, Sandbox, sandbox_settings


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {CALLER_KEY}"}],
)
async def test_v1_routes_need_a_known_bearer_key(
    sandbox: Sandbox, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with AsyncTestClient(app=create_app(sandbox_settings(sandbox.base_url))) as client:
        response = await client.post(
            "/v1/ai/completions", json={"prompt": "secret prompt"}, headers=headers
        )
        chat = await client.post(
            "/v1/chat/completions",
            json={"model": "fast", "messages": [{"role": "user", "content": "x"}]},
            headers=headers,
        )
        for path in ("/health/live", "/health/ready", "/health/ai-providers", "/metrics"):
            assert (await client.get(path)).status_code == 200, path
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("/unauthorized")
    assert chat.status_code == 401
    assert chat.json()["error"]["code"] == "invalid_api_key"  # as OpenAI answers a bad key
    assert sandbox.completions("groq") == 0
    for text in (response.text, chat.text, caplog.text):
        assert "wrong-key" not in text
        assert CALLER_KEY not in text
        assert "secret prompt" not in text


def test_openai_sdk_with_a_bad_key_gets_authentication_error(sandbox: Sandbox) -> None:
    with live_server(create_app(sandbox_settings(sandbox.base_url))) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(
                model="fast", messages=[{"role": "user", "content": "x"}]
            )


async def test_several_callers(sandbox: Sandbox) -> None:
    settings = sandbox_settings(
        sandbox.base_url, gateway_api_keys={"pipeline": "key-pipeline-01", "ops": "key-ops-0002"}
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        for key in ("key-pipeline-01", "key-ops-0002"):
            response = await client.post(
                "/v1/ai/completions",
                json={"prompt": "x"},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status_code == 200


async def test_per_caller_rate_limit_is_a_429_with_retry_after(sandbox: Sandbox) -> None:
    settings = sandbox_settings(sandbox.base_url, gateway_caller_rpm=3)
    async with gateway_client(create_app(settings)) as client:
        codes = [
            (await client.post("/v1/ai/completions", json={"prompt": "x"})).status_code
            for _ in range(3)
        ]
        limited = await client.post("/v1/ai/completions", json={"prompt": "x"})
    assert codes == [200, 200, 200]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert sandbox.completions("groq") == 3


def test_the_app_refuses_to_start_without_caller_keys() -> None:
    with pytest.raises(ConfigurationError, match="GATEWAY_API_KEYS"):
        create_app(Settings(gateway_api_keys={}))


def test_serve_refuses_to_start_without_caller_keys(tmp_path: Any) -> None:
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_API_KEYS": "", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "GATEWAY_API_KEYS" in result.stderr


async def test_auth_disabled_is_anonymous_and_said_loudly(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    settings = sandbox_settings(sandbox.base_url, gateway_api_keys={}, gateway_auth="disabled")
    with caplog.at_level(logging.WARNING):
        app = create_app(settings)
    assert "AUTHENTICATION DISABLED" in caplog.text
    async with AsyncTestClient(app=app) as client:
        assert (await client.post("/v1/ai/completions", json={"prompt": "x"})).status_code == 200
        ready = (await client.get("/health/ready")).json()
    assert ready["auth"] == "disabled"
    assert "AUTHENTICATION DISABLED" in ready["detail"]


def test_caller_keys_setting_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", "pipeline:abc123456789, ops:def123456789")
    settings = Settings()
    assert set(settings.gateway_api_keys) == {"pipeline", "ops"}
    assert "abc123456789" not in str(settings.masked())
    monkeypatch.setenv("GATEWAY_API_KEYS", "no-colon-here")
    with pytest.raises(ValueError, match="name:key"):
        Settings()
