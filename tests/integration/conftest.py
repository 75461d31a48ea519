from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.core.settings import Settings
from app.main import create_app
from infra.sandbox.literature.client import LiteratureSandbox
from tests.support.client import gateway_client
from tests.support.redis import RedisServer
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


@pytest.fixture(scope="module")
def lit_module(sandbox_process: Sandbox) -> Iterator[LiteratureSandbox]:
    """The literature side of the sandbox (Unpaywall, doi.org, PMC, publishers)."""
    literature = LiteratureSandbox(sandbox_process.base_url)
    yield literature
    literature.close()


@pytest.fixture
def lit(sandbox: Sandbox, lit_module: LiteratureSandbox) -> Iterator[LiteratureSandbox]:
    """Literature faults and counters cleared before and after: no fault (a hang, say)
    outlives its test."""
    lit_module.reset()
    yield lit_module
    lit_module.reset()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the module's own on a free port (tests may stop and restart it)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The module's Redis, running (a test before may have stopped it)."""
    if redis_server.process is None:
        redis_server.start()
    return redis_server


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to pause, stop and start empty."""
    redis_server = RedisServer().start()
    yield redis_server
    redis_server.stop()
