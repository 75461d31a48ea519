"""OpenAI's request-rate headers on the caller limit (GATEWAY_CALLER_RPM): on every answer
to an authenticated caller and on its 429 (with Retry-After), in OpenAI's duration format,
counted in this process or on Redis."""

from __future__ import annotations

import re
import uuid

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from app.core.auth import CallerAuthenticator, openai_duration
from app.core.clock import ManualClock
from app.core.errors import RateLimitExceeded
from app.core.settings import Settings
from app.core.shared import SharedState
from app.main import create_app
from tests.support.client import AUTH_HEADERS, CALLER_KEY, gateway_client
from tests.support.live import live_server
from tests.support.redis import RedisServer, needs_redis
from tests.support.sandbox import Sandbox, sandbox_settings

_GO_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")
BEARER = "Bearer key-pipeline-01"


def _seconds(duration: str) -> float:
    match = _GO_DURATION.match(duration)
    assert match is not None, duration
    assert duration, "empty duration"
    hours, minutes, secs, millis = match.groups()
    return (
        int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0) + int(millis or 0) / 1000
    )


@pytest.mark.parametrize(
    ("seconds", "written"),
    [
        (0, "0s"),
        (0.0171, "18ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (7.66, "7.66s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (3723.25, "1h2m3.25s"),
    ],
)
def test_durations_are_written_as_openai_writes_them(seconds: float, written: str) -> None:
    assert openai_duration(seconds) == written


@given(st.floats(min_value=0, max_value=10 * 86400, allow_nan=False))
def test_a_duration_never_says_less_than_the_wait_and_at_most_a_millisecond_more(
    seconds: float,
) -> None:
    read = _seconds(openai_duration(seconds))
    assert seconds - 1e-9 <= read <= seconds + 0.001 + 1e-9


def _authenticator(clock: ManualClock, rpm: int = 3) -> CallerAuthenticator:
    settings = Settings(
        gateway_api_keys={"pipeline": SecretStr("key-pipeline-01")}, gateway_caller_rpm=rpm
    )
    return CallerAuthenticator(settings, clock)


def _headers(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in pairs}


async def test_remaining_and_reset_follow_the_callers_bucket() -> None:
    clock = ManualClock()
    auth = _authenticator(clock, rpm=3)
    assert _headers(auth.rate_headers("pipeline")) == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "0s",
    }
    await auth.authenticate(BEARER)
    seen = _headers(auth.rate_headers("pipeline"))
    assert seen["x-ratelimit-remaining-requests"] == "2"
    assert seen["x-ratelimit-reset-requests"] == "20s"  # one request refills in 60/3 s
    await auth.authenticate(BEARER)
    await auth.authenticate(BEARER)
    with pytest.raises(RateLimitExceeded) as refused:
        await auth.authenticate(BEARER)
    headers = refused.value.headers()
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1m0s"
    assert headers["Retry-After"] == "20"
    clock.advance(20)
    assert _headers(auth.rate_headers("pipeline"))["x-ratelimit-remaining-requests"] == "1"


async def test_no_headers_without_a_caller_rate(sandbox: Sandbox) -> None:
    settings = sandbox_settings(sandbox.base_url, gateway_caller_rpm=None)
    async with gateway_client(create_app(settings)) as client:
        response = await client.get("/v1/models")
    assert response.status_code == 200
    assert "x-ratelimit-limit-requests" not in response.headers


async def test_headers_on_success_and_on_the_429_of_any_route(sandbox: Sandbox) -> None:
    settings = sandbox_settings(sandbox.base_url, gateway_caller_rpm=2)
    async with gateway_client(create_app(settings)) as client:
        first = await client.post(
            "/v1/chat/completions",
            json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
        )
        second = await client.get("/v1/usage")
        third = await client.post("/v1/ai/completions", json={"prompt": "x"})
        health = await client.get("/health/live")
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert _seconds(first.headers["x-ratelimit-reset-requests"]) > 0
    assert "retry-after" not in first.headers
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.status_code == 429
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(third.headers["retry-after"]) >= 1
    assert third.headers["content-type"].startswith("application/problem+json")
    assert "x-ratelimit-limit-requests" not in health.headers  # open routes have no caller


def test_the_openai_sdk_sees_the_headers_and_the_429(sandbox: Sandbox) -> None:
    settings = sandbox_settings(sandbox.base_url, gateway_caller_rpm=1)
    with live_server(create_app(settings)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=CALLER_KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-ratelimit-limit-requests"] == "1"
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
        assert raw.parse().choices[0].message.content
        with pytest.raises(openai.RateLimitError) as limited:
            client.models.list()
    headers = limited.value.response.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < _seconds(headers["x-ratelimit-reset-requests"]) <= 60
    assert int(headers["retry-after"]) >= 1
    assert limited.value.code == "rate_limit_exceeded"
    assert AUTH_HEADERS  # the same caller key as the in-process tests


@needs_redis
async def test_shared_limit_headers_count_on_redis(redis_server: RedisServer) -> None:
    """One replica on Redis (exact: no lease under 200 rpm): the same numbers as in process."""
    state = SharedState(redis_server.url, prefix=f"t{uuid.uuid4().hex[:8]}:", replica_id="a")
    try:
        await state.beat()
        clock = ManualClock()
        auth = _authenticator(clock, rpm=4)
        auth.share(state)
        await auth.authenticate(BEARER)
        await auth.authenticate(BEARER)
        seen = _headers(auth.rate_headers("pipeline"))
        assert seen["x-ratelimit-remaining-requests"] == "2"
        assert seen["x-ratelimit-reset-requests"] == "30s"
        await auth.authenticate(BEARER)
        await auth.authenticate(BEARER)
        with pytest.raises(RateLimitExceeded) as refused:
            await auth.authenticate(BEARER)
        assert refused.value.headers()["x-ratelimit-remaining-requests"] == "0"
    finally:
        await state.aclose()
