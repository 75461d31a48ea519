"""Errors on the OpenAI-compatible routes, as OpenAI's SDK reads them: always the
`{"error": {message, type, param, code}}` envelope (auth, routing, malformed and oversized
bodies included), with the status and `code` OpenAI gives the same case, so the SDK raises
the class a client already handles. The gateway's own routes stay on problem+json."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.settings import Settings
from app.main import create_app
from tests.support.client import AUTH_HEADERS, CALLER_KEY
from tests.support.live import live_server
from tests.support.sandbox import Sandbox, sandbox_settings

USER = [{"role": "user", "content": "hello"}]


def _live(app_settings: Settings) -> Iterator[str]:
    with live_server(create_app(app_settings)) as url:
        yield url


@pytest.fixture
def live(sandbox: Sandbox) -> Iterator[str]:
    yield from _live(
        sandbox_settings(sandbox.base_url, ai_max_prompt_chars=1000, ai_max_body_bytes=20_000)
    )


def _sdk(url: str, key: str = CALLER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def _is_openai_error(response: httpx.Response) -> dict[str, Any]:
    """The error object, after checking the envelope is OpenAI's and nothing else."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "param", "code"} <= set(body["error"])
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return dict(body["error"])


def test_bad_key_raises_authentication_error_with_invalid_api_key(live: str) -> None:
    with pytest.raises(openai.AuthenticationError) as bad:
        _sdk(live, "not-a-key").chat.completions.create(model="fast", messages=USER)
    assert bad.value.code == "invalid_api_key"
    assert bad.value.type == "invalid_request_error"
    assert "not-a-key" not in str(bad.value.body)


def test_unknown_model_is_404_model_not_found_and_calls_no_upstream(
    live: str, sandbox: Sandbox
) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        _sdk(live).chat.completions.create(model="no-such-model", messages=USER)
    assert missing.value.code == "model_not_found"
    assert missing.value.param == "model"
    assert sum(sandbox.completions(p) for p in ("groq", "gemini", "azure", "openai")) == 0


def test_model_missing_at_its_provider_is_404_model_not_found(live: str, sandbox: Sandbox) -> None:
    sandbox.chaos("openai", missing_models=["gpt-4o-mini"])
    with pytest.raises(openai.NotFoundError) as missing:
        _sdk(live).chat.completions.create(model="openai/gpt-4o-mini", messages=USER)
    assert missing.value.code == "model_not_found"
    assert sandbox.completions("openai") == 1


def test_prompt_over_the_limit_is_context_length_exceeded(live: str) -> None:
    with pytest.raises(openai.BadRequestError) as long:
        _sdk(live).chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "x" * 1001}]
        )
    assert long.value.code == "context_length_exceeded"
    assert long.value.param == "messages"


def test_tools_are_refused_and_the_error_says_so(live: str, sandbox: Sandbox) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as refused:
        _sdk(live).chat.completions.create(
            model="fast",
            messages=USER,
            tools=[tool],  # type: ignore[list-item]
        )
    assert refused.value.code == "unsupported_parameter"
    assert refused.value.param == "tools"
    assert "'tools' (function calling) is not supported" in refused.value.message
    assert sandbox.completions("groq") == 0


def test_invalid_field_is_a_400_naming_the_field(live: str) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        _sdk(live).chat.completions.create(model="fast", messages=USER, temperature=3)
    assert bad.value.type == "invalid_request_error"
    assert bad.value.param is not None
    assert "temperature" in bad.value.param


def test_malformed_json_oversized_body_and_wrong_method_answer_openai_errors(live: str) -> None:
    url = f"{live}/v1/chat/completions"
    with httpx.Client(headers=AUTH_HEADERS, trust_env=False) as http:
        malformed = http.post(
            url, content=b"{not json", headers={"content-type": "application/json"}
        )
        oversized = http.post(url, json={"model": "fast", "messages": USER, "pad": "x" * 30_000})
        wrong_method = http.get(url)
        no_key = httpx.post(url, json={"model": "fast", "messages": USER}, trust_env=False)
    assert malformed.status_code == 400
    assert _is_openai_error(malformed)["code"] == "invalid_json"
    assert oversized.status_code == 413
    assert _is_openai_error(oversized)["code"] == "payload_too_large"
    assert wrong_method.status_code == 405
    assert _is_openai_error(wrong_method)["code"] == "method_not_allowed"
    assert no_key.status_code == 401
    assert _is_openai_error(no_key)["code"] == "invalid_api_key"


def test_the_gateway_routes_stay_on_problem_json(live: str) -> None:
    with httpx.Client(headers=AUTH_HEADERS, trust_env=False) as http:
        malformed = http.post(
            f"{live}/v1/ai/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        unknown = http.post(
            f"{live}/v1/ai/completions", json={"prompt": "x", "model": "no-such-model"}
        )
    assert malformed.headers["content-type"].startswith("application/problem+json")
    assert unknown.status_code == 400
    assert unknown.headers["content-type"].startswith("application/problem+json")


def test_caller_over_its_rate_raises_rate_limit_error(sandbox: Sandbox) -> None:
    for url in _live(sandbox_settings(sandbox.base_url, gateway_caller_rpm=1)):
        client = _sdk(url)
        client.chat.completions.create(model="fast", messages=USER)
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="fast", messages=USER)
        assert limited.value.code == "rate_limit_exceeded"
        assert limited.value.type == "requests"
        assert int(limited.value.response.headers["retry-after"]) >= 1


_BODIES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    ).map(lambda value: httpx.Request("POST", "/", json=value).content),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=_BODIES)
def test_any_hostile_body_gets_an_openai_error_never_problem_json(live: str, body: bytes) -> None:
    response = httpx.post(
        f"{live}/v1/chat/completions",
        content=body,
        headers={**AUTH_HEADERS, "content-type": "application/json"},
        trust_env=False,
    )
    assert response.status_code in (400, 413), response.text
    _is_openai_error(response)
