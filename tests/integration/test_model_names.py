"""A model name never reaches an upstream URL path it was not meant for.

Gemini and Azure put the model (deployment) name in the URL path, and httpx resolves `..`
and turns `?`/`#` into a query or fragment: `gemini/../../../_stats/reset#` once made the
gateway POST to the sandbox's `/_stats/reset` with the Gemini key attached. Every hostile
name is refused at the edge (400) and proven at the far side: the sandbox's request recorder
(`/_requests`, which records every request, routed or not, before anything else) saw nothing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from app.main import create_app
from tests.support.client import AUTH_HEADERS, gateway_client
from tests.support.live import live_server
from tests.support.sandbox import Sandbox, sandbox_settings

PROVIDERS = ("groq", "gemini", "azure", "openai")

HOSTILE = [
    "../../../_stats/reset#",
    "..",
    ".",
    "x/../../../_stats/reset",
    "%2e%2e/%2e%2e/%2e%2e/_stats/reset",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2f_stats%2freset",
    "%2E%2E",
    "x?key=stolen",
    "x#fragment",
    "x%2Fy",
    "x%23y",
    "..\\..\\..\\_stats\\reset",
    "x\\y",
    "\uff0e\uff0e/\uff0e\uff0e/\uff0e\uff0e/_stats/reset",  # fullwidth full stops
    "\u3002\u3002",  # ideographic full stops
    "x\u3002y",
    "x y",
    "/x",
    "x//y",
    "-x",
    "x\n",
]

# The only requests a gateway makes on its own: health probes of each provider's list.
PROBES = {
    "/groq/openai/v1/models",
    "/openai/v1/models",
    "/azure/openai/deployments",
    "/gemini/v1beta/models",
}


def _clear(sandbox: Sandbox) -> None:
    httpx.delete(f"{sandbox.base_url}/_requests", trust_env=False).raise_for_status()


def _received(sandbox: Sandbox) -> list[dict[str, Any]]:
    """What reached the sandbox since `_clear`, the gateway's own health probes left out,
    and the test's own reads of the recorder not included (they are not recorded)."""
    response = httpx.get(f"{sandbox.base_url}/_requests", trust_env=False)
    response.raise_for_status()
    rows: list[dict[str, Any]] = response.json()
    return [r for r in rows if not (r["method"] == "GET" and r["path"] in PROBES)]


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[AsyncTestClient[Any]]:
    async with gateway_client(create_app(sandbox_settings(sandbox.base_url))) as test_client:
        yield test_client


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_hostile_names_are_400_and_reach_no_path(
    client: AsyncTestClient[Any], sandbox: Sandbox, provider: str
) -> None:
    _clear(sandbox)
    for name in HOSTILE:
        model = f"{provider}/{name}"
        native = await client.post("/v1/ai/completions", json={"prompt": "x", "model": model})
        assert native.status_code == 400, (model, native.text)
        assert native.headers["content-type"].startswith("application/problem+json")
        problem = native.json()
        assert problem["type"].endswith("/invalid-model-name"), problem
        assert "letters, digits" in problem["detail"]  # says what is allowed
        assert "_stats" not in problem["detail"]  # and does not echo the caller's text
        for stream in (False, True):
            chat = await client.post(
                "/v1/chat/completions",
                json={
                    "model": model,
                    "stream": stream,
                    "messages": [{"role": "user", "content": "x"}],
                },
            )
            assert chat.status_code == 400, (model, stream, chat.text)
            error = chat.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["param"] == "model"
    assert _received(sandbox) == []
    assert sandbox.completions(provider) == 0


@pytest.mark.parametrize(
    "model",
    [
        "gemini-1.5-flash/../../../_stats/reset#",  # a bare Gemini name
        "gpt-4o/../../x",  # a bare OpenAI name
        "gemini/a/b",  # Gemini ids hold no '/': it would be a path segment
        "azure/a/b",  # nor do Azure deployments
        "groq/a/b/c",  # Groq's ids hold at most one
    ],
)
async def test_names_outside_a_providers_id_rule_are_refused(
    client: AsyncTestClient[Any], sandbox: Sandbox, model: str
) -> None:
    _clear(sandbox)
    response = await client.post("/v1/ai/completions", json={"prompt": "x", "model": model})
    assert response.status_code == 400, response.text
    assert _received(sandbox) == []


async def test_a_nested_id_is_sent_in_the_body_where_the_provider_has_them(
    client: AsyncTestClient[Any], sandbox: Sandbox
) -> None:
    """The one '/' Groq ids may hold travels in the JSON body to the usual endpoint."""
    _clear(sandbox)
    response = await client.post(
        "/v1/ai/completions", json={"prompt": "x", "model": "groq/openai/gpt-oss-20b"}
    )
    assert response.status_code == 404  # the sandbox does not serve it: model_not_found
    posts = [r for r in _received(sandbox) if r["method"] == "POST"]
    assert [r["raw_path"] for r in posts] == ["/groq/openai/v1/chat/completions"]
    assert sandbox.last("groq")["json"]["model"] == "openai/gpt-oss-20b"


async def test_valid_names_still_reach_their_endpoint(
    client: AsyncTestClient[Any], sandbox: Sandbox
) -> None:
    _clear(sandbox)
    for model in ("gemini/gemini-1.5-flash", "azure/gpt-4o-mini", "openai/gpt-4o-mini"):
        response = await client.post("/v1/ai/completions", json={"prompt": "x", "model": model})
        assert response.status_code == 200, response.text
    posts = [r["raw_path"] for r in _received(sandbox) if r["method"] == "POST"]
    assert posts == [
        "/gemini/v1beta/models/gemini-1.5-flash:generateContent",
        "/azure/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
        "/openai/v1/chat/completions",
    ]


# --- property: whatever the name, nothing lands outside a completion endpoint ---------------

# Valid parts (which do reach the adapters) mixed with every kind of piece that has moved a
# path before: dot segments, slashes, escapes, query and fragment marks, backslashes, Unicode
# dots and look-alikes, control characters.
_valid_part = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,12}", fullmatch=True)
_hostile_piece = st.sampled_from(
    [
        *(".", "..", "/", "//", "%", "%2e", "%2E", "%2f", "%2F", "%5c", "?", "#", "\\", " "),
        *("\uff0e", "\u3002", "\u2024", "\ufe52", "\u00b7", "\x00", "\t", "\n", ";", "&", "@"),
    ]
)
_hostile_names = st.one_of(
    _valid_part,
    st.lists(st.one_of(_valid_part, _hostile_piece), min_size=1, max_size=6).map("".join),
)

# Where a completion may go: the fixed OpenAI-style paths, or one plain model segment (the
# adapters percent-encode ':' in it; aiohttp's URL handling sends it back as ':').
_SEGMENT = r"[A-Za-z0-9](?:[A-Za-z0-9._:-]|%3A)*"
_ALLOWED_POST = re.compile(
    r"/groq/openai/v1/chat/completions"
    r"|/openai/v1/chat/completions"
    rf"|/gemini/v1beta/models/{_SEGMENT}:(generateContent|streamGenerateContent\?alt=sse)"
    rf"|/azure/openai/deployments/{_SEGMENT}/chat/completions\?api-version=2024-10-21"
)


@pytest.fixture(scope="module")
def live_url(sandbox_process: Sandbox) -> Iterator[str]:
    sandbox_process.reset()
    # Unpriced names are let through (at the worst price), so valid generated names do reach
    # the Gemini and Azure adapters and their path building is exercised.
    settings_ = sandbox_settings(
        sandbox_process.base_url, gateway_caller_rpm=None, ai_allow_unpriced_models=True
    )
    with live_server(create_app(settings_)) as url:
        yield url


def test_no_generated_name_reaches_a_path_outside_the_completion_endpoints(
    live_url: str, sandbox_process: Sandbox
) -> None:
    cases: list[tuple[str, str, bool]] = []

    @given(provider=st.sampled_from(PROVIDERS), name=_hostile_names, stream=st.booleans())
    @settings(
        max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def collect(provider: str, name: str, stream: bool) -> None:
        cases.append((provider, name, stream))

    # Generated first, sent after: Hypothesis reseeds the global `random` for each example,
    # which the gateway's ids come from, and rows with equal ids would not fit the ledger.
    collect()
    _clear(sandbox_process)
    with httpx.Client(base_url=live_url, headers=AUTH_HEADERS, timeout=30, trust_env=False) as http:
        for provider, name, stream in cases:
            response = http.post(
                "/v1/chat/completions",
                json={
                    "model": f"{provider}/{name}",
                    "stream": stream,
                    "messages": [{"role": "user", "content": "x"}],
                },
            )
            assert response.status_code != 500, response.text  # refused or answered, no crash
    received = _received(sandbox_process)
    assert all(r["method"] == "POST" for r in received), received
    assert {r["raw_path"].split("/")[1] for r in received} == set(PROVIDERS)  # all exercised
    outside = [r["raw_path"] for r in received if not _ALLOWED_POST.fullmatch(r["raw_path"])]
    assert outside == []
