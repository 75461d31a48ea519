from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.core.settings import Settings
from app.main import create_app
from tests.support.client import gateway_client
from tests.support.sandbox import Sandbox, sandbox_settings

ClientFactory = Callable[..., Any]


@pytest.fixture
def settings(sandbox: Sandbox) -> Settings:
    return sandbox_settings(sandbox.base_url)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    """The real app (real adapters, real HTTP to the sandbox) behind an in-process client."""
    async with gateway_client(create_app(settings)) as test_client:
        yield test_client
