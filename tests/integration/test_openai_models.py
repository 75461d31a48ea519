"""`GET /v1/models` as OpenAI's SDK reads it, and the build in `--version` and /health/live."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest

from app.core.settings import AzureSettings, GeminiSettings, OpenAISettings
from app.main import create_app
from tests.support.client import CALLER_KEY
from tests.support.live import live_server
from tests.support.sandbox import ROOT, Sandbox, sandbox_settings


@pytest.fixture
def live(sandbox: Sandbox) -> Iterator[str]:
    with live_server(create_app(sandbox_settings(sandbox.base_url))) as url:
        yield url


def _sdk(url: str, key: str = CALLER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_models_list_has_the_aliases_and_every_routable_provider_model(
    live: str, sandbox: Sandbox
) -> None:
    models = list(_sdk(live).models.list())
    ids = [m.id for m in models]
    assert ids[:2] == ["fast", "quality"]
    assert all(m.object == "model" and isinstance(m.created, int) for m in models)
    assert len(ids) == len(set(ids))
    owners = {m.id: m.owned_by for m in models}
    # Each configured provider's chain, the Azure deployment, priced family models.
    assert owners["azure/gpt-4o-mini"] == "azure"
    assert owners["openai/gpt-4o-mini"] == "openai"
    assert any(i.startswith("groq/") for i in ids)
    assert any(i.startswith("gemini/gemini-") for i in ids)
    # Every listed name routes: a completion through the SDK with a listed id works.
    pinned = next(i for i in ids if i.startswith("groq/"))
    reply = _sdk(live).chat.completions.create(
        model=pinned, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.model_extra is not None
    assert reply.model_extra["provider"] == "groq"


def test_models_list_calls_no_upstream_and_needs_a_key(live: str, sandbox: Sandbox) -> None:
    before = {p: sandbox.completions(p) for p in ("groq", "gemini", "azure", "openai")}
    _sdk(live).models.list()
    assert {p: sandbox.completions(p) for p in before} == before
    with pytest.raises(openai.AuthenticationError) as refused:
        _sdk(live, "wrong").models.list()
    assert refused.value.code == "invalid_api_key"


def test_retrieve_a_model_and_404_for_an_unknown_one(live: str) -> None:
    client = _sdk(live)
    assert client.models.retrieve("fast").owned_by == "literature-ai-gateway"
    assert client.models.retrieve("openai/gpt-4o-mini").owned_by == "openai"
    bare = client.models.retrieve("gpt-4o-mini")  # a bare name a provider serves
    assert bare.id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"


def test_only_configured_providers_are_listed(sandbox: Sandbox) -> None:
    settings = sandbox_settings(
        sandbox.base_url,
        gemini=GeminiSettings(),
        azure=AzureSettings(),
        openai=OpenAISettings(),
    )
    with live_server(create_app(settings)) as url:
        ids = [m.id for m in _sdk(url).models.list()]
    assert ids[:2] == ["fast", "quality"]
    assert ids[2:]
    assert all(i.startswith("groq/") for i in ids[2:])


def test_health_live_names_the_build(live: str) -> None:
    body = httpx.get(f"{live}/health/live", trust_env=False).json()
    assert body["status"] == "ok"
    assert body["version"] == "0.1.0"
    assert body["commit"]


def test_version_flag_prints_version_and_the_commit_from_git_commit() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"GIT_COMMIT": "0123abcd", "PATH": ""},
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "literature-ai-gateway 0.1.0 (commit 0123abcd)"
    hostile = subprocess.run(
        [sys.executable, "-m", "app", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"GIT_COMMIT": "$(rm -rf /)\n<b>", "PATH": ""},
        check=False,
        timeout=60,
    )
    assert hostile.stdout.strip() == "literature-ai-gateway 0.1.0 (commit unknown)"
