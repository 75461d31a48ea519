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


async def verify(client: AsyncTestClient[Any], **body: Any) -> dict[str, Any]:
    """`POST /v1/fulltext/verify` with `body`; the answer's JSON, which must be a 200."""
    response = await client.post("/v1/fulltext/verify", json=body)
    assert response.status_code == 200, response.text
    verdict: dict[str, Any] = response.json()
    return verdict
