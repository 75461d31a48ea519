"""The in-process test client, authenticated as the test caller."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

CALLER = "tests"
CALLER_KEY = "test-caller-key-0001"
AUTH_HEADERS = {"Authorization": f"Bearer {CALLER_KEY}"}


def gateway_client(app: Litestar) -> AsyncTestClient[Any]:
    client: AsyncTestClient[Any] = AsyncTestClient(app=app)
    client.headers.update(AUTH_HEADERS)
    return client
