"""Start the sandbox (the far side of the network) as a real process on 127.0.0.1."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.core.settings import (
    AzureSettings,
    GeminiSettings,
    GroqSettings,
    LiteratureSettings,
    OpenAISettings,
    Settings,
)
from infra.sandbox.literature import gateway_settings
from infra.sandbox.process import spawn_sandbox
from tests.support.client import CALLER, CALLER_KEY

ROOT = Path(__file__).resolve().parents[2]

GROQ_KEYS = ["gsk-sandbox-1", "gsk-sandbox-2", "gsk-sandbox-3"]
OPENAI_KEY = "sk-sandbox-openai"
AZURE_KEY = "azure-sandbox-key"
GEMINI_KEY = "gemini-sandbox-key"


@dataclass
class Sandbox:
    """A running sandbox and a synchronous client for its chaos controls and counters."""

    process: subprocess.Popen[bytes]
    base_url: str

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=5.0, trust_env=False)

    def chaos(self, provider: str, **config: Any) -> None:
        with self._client() as client:
            client.put(f"/_chaos/{provider}", json=config).raise_for_status()

    def clear(self, provider: str) -> None:
        with self._client() as client:
            client.delete(f"/_chaos/{provider}").raise_for_status()

    def reset(self) -> None:
        with self._client() as client:
            client.post("/_chaos/reset").raise_for_status()

    def stats(self) -> dict[str, Any]:
        with self._client() as client:
            response = client.get("/_stats")
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data

    def last(self, provider: str) -> dict[str, Any]:
        with self._client() as client:
            response = client.get(f"/_last/{provider}")
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data

    def completions(self, provider: str) -> int:
        return int(self.stats().get(provider, {}).get("completions", 0))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_sandbox() -> Sandbox:
    process, base_url = spawn_sandbox(timeout_s=20)
    return Sandbox(process, base_url)


# One folder for every test ledger of this process, removed when the process exits: a ledger
# per test (thousands a run) must not pile up in the machine's /tmp.
_LEDGERS = tempfile.TemporaryDirectory(prefix="gateway-test-ledgers-")


def fresh_database_url() -> str:
    folder = tempfile.mkdtemp(prefix="ledger-", dir=_LEDGERS.name)
    return f"sqlite+aiosqlite:///{folder}/gateway.db"


def sandbox_settings(sandbox_url: str, **overrides: Any) -> Settings:
    """Settings wired to the sandbox, every provider configured unless overridden."""
    sections: dict[str, Any] = {
        "groq": GroqSettings(api_keys=GROQ_KEYS, base_url=f"{sandbox_url}/groq/openai/v1"),
        "gemini": GeminiSettings(api_key=GEMINI_KEY, base_url=f"{sandbox_url}/gemini"),
        "azure": AzureSettings(
            api_key=AZURE_KEY, endpoint=f"{sandbox_url}/azure", deployment="gpt-4o-mini"
        ),
        "openai": OpenAISettings(api_key=OPENAI_KEY, base_url=f"{sandbox_url}/openai/v1"),
    }
    # Literature upstreams (Unpaywall, doi.org, PMC, publishers) are the sandbox's too.
    sections["literature"] = LiteratureSettings(**gateway_settings(sandbox_url))
    sections["gateway_api_keys"] = {CALLER: CALLER_KEY}
    # Each app its own ledger, so budgets and rows never leak between tests.
    sections["database_url"] = fresh_database_url()
    sections.update(overrides)
    return Settings(**sections)
