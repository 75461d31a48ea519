"""Shared fixtures: a clean environment, and the sandbox as a real process on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.client import CALLER, CALLER_KEY
from tests.support.sandbox import Sandbox, fresh_database_url, start_sandbox

_PREFIXES = (
    "GROQ_",
    "GEMINI_",
    "AZURE_OPENAI_",
    "OPENAI_",
    "AI_",
    "GATEWAY_",
    "DAILY_BUDGET_",
    "MONTHLY_BUDGET_",
    "BUDGET_",
    "REDIS_",
    "LEDGER_",
    "HTTP_",
    "LITERATURE_",
)
_NAMES = {"HOST", "PORT", "LOG_LEVEL", "DATABASE_URL", "WORKERS", "METRICS_PORT_BASE"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test, never from whatever the machine has exported; the one
    exception is the test caller's key, so every app the tests build has a caller."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES) or name in _NAMES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("GATEWAY_API_KEYS", f"{CALLER}:{CALLER_KEY}")
    monkeypatch.setenv("DATABASE_URL", fresh_database_url())


@pytest.fixture(scope="session")
def sandbox_process() -> Iterator[Sandbox]:
    sandbox = start_sandbox()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def sandbox(sandbox_process: Sandbox) -> Sandbox:
    """The sandbox with every fault cleared and counters at zero."""
    sandbox_process.reset()
    return sandbox_process
