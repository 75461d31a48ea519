"""The model-name rule, the path-segment encoder and the client's path guard, without I/O.

The property tests run each built URL through yarl, the URL library of the aiohttp transport
that sends it: httpx-aiohttp hands aiohttp `str(url)`, and yarl decodes percent-encoded dots
and resolves dot segments again. What matters is the path that leaves the process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import yarl
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from app.core.http import UnsafeUpstreamPath, UpstreamClient, make_upstream_client, path_segment
from app.core.model_names import model_field_problem, model_id_problem
from app.core.settings import AzureSettings, GeminiSettings, GroqSettings, Settings
from app.modules.ai.domain import CompletionRequest
from app.modules.ai.errors import FailureKind, InvalidModelName, ProviderError
from app.modules.ai.pricing import PriceTable
from app.modules.ai.providers.base import model_segment
from app.modules.ai.requests import chat_request
from app.modules.ai.routing import Router
from app.modules.ai.schemas import ChatCompletionBody

BASE = "http://127.0.0.1:9/gemini"

HOSTILE = [
    "..",
    ".",
    "../../../_stats/reset#",
    "%2e%2e",
    "%2E%2E/x",
    "x?key=1",
    "x#y",
    "x%2Fy",
    "x\\y",
    "\uff0e\uff0e",
    "\u3002",
    "x\u3002y",
    "x y",
    "",
    "/x",
    "x/",
    "-x",
    "x\n",
    "x" * 201,
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_not_model_ids(name: str) -> None:
    assert model_id_problem(name, nested=True) is not None
    assert model_id_problem(name, nested=False) is not None


@pytest.mark.parametrize(
    ("name", "nested", "ok"),
    [
        ("gpt-4o-mini", False, True),
        ("gemini-1.5-flash", False, True),
        ("ft:gpt-4o-mini:org::abc123", False, True),
        ("llama3.3_70b", False, True),
        ("openai/gpt-oss-20b", True, True),
        ("openai/gpt-oss-20b", False, False),
        ("a/b/c", True, False),
    ],
)
def test_model_ids(name: str, nested: bool, ok: bool) -> None:
    assert (model_id_problem(name, nested=nested) is None) is ok


def test_the_request_field_allows_a_provider_prefix_and_one_nested_slash() -> None:
    assert model_field_problem("groq/openai/gpt-oss-20b") is None
    assert model_field_problem("fast") is None
    assert model_field_problem("a/b/c/d") is not None
    assert model_field_problem("gemini/../x") is not None


# Empty and over-long names are refused by the schema itself, before this check.
@pytest.mark.parametrize("name", [name for name in HOSTILE if 0 < len(name) <= 150])
def test_the_edge_refuses_with_a_400_that_says_what_is_allowed(name: str) -> None:
    body = ChatCompletionBody(model=f"gemini/{name}", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(InvalidModelName) as info:
        chat_request(body, Settings())
    assert info.value.status == 400
    assert "letters, digits and . _ : -" in info.value.detail
    assert info.value.openai_error == {"param": "model"}


def _router(settings: Settings) -> Router:
    return Router(settings, PriceTable(settings), lambda _: None)


@pytest.mark.parametrize(
    "model", ["gemini/a/b", "azure/a/b", "groq/a/b/c", "gemini-1.5-flash/x", "gpt-4o/x/y"]
)
def test_the_router_applies_each_providers_rule(model: str) -> None:
    with pytest.raises(InvalidModelName):
        _router(Settings()).plan(model)


def test_the_router_keeps_nested_ids_where_the_provider_has_them() -> None:
    routes = _router(Settings()).plan("groq/openai/gpt-oss-20b")
    assert routes[0].models == ("openai/gpt-oss-20b",)


@pytest.mark.parametrize("deployment", ["../x", "a/b", "a%2Fb", "..", "a?b", "\uff0e\uff0e"])
def test_a_bad_azure_deployment_is_refused_at_start(deployment: str) -> None:
    with pytest.raises(ValidationError, match="AZURE_OPENAI_DEPLOYMENT"):
        AzureSettings(deployment=deployment)


def test_bad_chain_models_are_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="GEMINI_FAST_MODELS"):
        GeminiSettings(fast_models=["gemini-1.5-flash", "../x"])
    with pytest.raises(ValidationError, match="GEMINI_QUALITY_MODELS"):
        GeminiSettings(quality_models=["a/b"])
    assert GroqSettings(fast_models=["openai/gpt-oss-20b"]).fast_models == ["openai/gpt-oss-20b"]


@pytest.mark.parametrize("value", ["", ".", ".."])
def test_dot_segments_cannot_be_path_segments(value: str) -> None:
    with pytest.raises(UnsafeUpstreamPath):
        path_segment(value)
    with pytest.raises(ProviderError) as info:
        model_segment(value)
    assert info.value.kind is FailureKind.BAD_REQUEST  # the caller's fault, not the provider's


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = make_upstream_client(BASE, max_connections=1)
    yield upstream
    await upstream.aclose()


@pytest.mark.parametrize(
    "path",
    [
        "v1beta/models/../../_stats/reset",
        "v1beta/models/%2e%2e/%2E%2E/_stats/reset",
        "v1beta/models/.",
        "v1beta/models/x?key=1",
        "v1beta/models/x#y",
        "v1beta/models/x\\y",
        "v1beta/models/\uff0e\uff0e",
        "//evil.example/x",
        "/_stats/reset",
        "v1beta//models",
        "v1beta/models/x y",
        "v1beta/models/%zz",
    ],
)
async def test_the_client_refuses_paths_that_would_leave_their_endpoint(
    client: UpstreamClient, path: str
) -> None:
    with pytest.raises(UnsafeUpstreamPath):
        client.build("POST", path, headers={})


async def test_the_client_builds_plain_paths_unchanged(client: UpstreamClient) -> None:
    request = client.build("POST", "v1beta/models/gemini-1.5-flash:generateContent", headers={})
    assert str(request.url) == f"{BASE}/v1beta/models/gemini-1.5-flash:generateContent"


@given(name=st.text(max_size=30))
async def test_any_string_is_one_segment_under_the_base_or_refused(name: str) -> None:
    """Whatever the name, the wire path (as yarl sends it) is the endpoint's, with the name as
    exactly one segment, never a dot segment: nothing climbs, adds a query or a fragment."""
    upstream = make_upstream_client(BASE, max_connections=1)
    try:
        try:
            path = f"v1beta/models/{path_segment(name)}:generateContent"
            request = upstream.build("POST", path, headers={})
        except UnsafeUpstreamPath:
            return
        wire = yarl.URL(str(request.url))  # what aiohttp does with the httpx URL
        assert (wire.host, wire.port) == ("127.0.0.1", 9)
        assert wire.query_string == ""
        assert wire.fragment == ""
        parts = wire.raw_path.split("/")
        assert parts[:4] == ["", "gemini", "v1beta", "models"]
        assert len(parts) == 5
        assert parts[4].endswith(":generateContent")
        assert parts[4] not in (".", "..")
    finally:
        await upstream.aclose()


def test_a_nested_id_passes_the_edge_unchanged() -> None:
    body = ChatCompletionBody(
        model="groq/openai/gpt-oss-20b", messages=[{"role": "user", "content": "x"}]
    )
    request = chat_request(body, Settings())
    assert isinstance(request, CompletionRequest)
    assert request.model == "groq/openai/gpt-oss-20b"
