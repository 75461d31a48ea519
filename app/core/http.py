"""The one way this service builds outbound HTTP clients.

httpx's default transport collapses past ~240 requests/s on one core (httpcore pool scans,
see STYLE.md), so every upstream client runs the httpx API over aiohttp's pool. Clients never
read proxies or netrc from the environment and never retry on their own: the guard owns retries.
"""

from __future__ import annotations

import httpx
from httpx_aiohttp import AiohttpTransport

# Responses bigger than this are not an LLM answer we want to hold in memory.
DEFAULT_BODY_CAP_BYTES = 8 * 1024 * 1024


class BodyTooLarge(Exception):
    """The upstream sent more than we agreed to read."""


def make_upstream_client(
    base_url: str,
    *,
    max_connections: int,
    connect_timeout_s: float = 5.0,
) -> httpx.AsyncClient:
    """One client per upstream, created at start and closed on shutdown.

    Overall deadlines are enforced by the caller with `asyncio.timeout`; the per-phase
    timeouts here only stop a connect attempt from outliving its usefulness.
    """
    transport = AiohttpTransport(
        limits=httpx.Limits(max_connections=max_connections, keepalive_expiry=30.0),
        trust_env=False,
        retries=0,
    )
    return httpx.AsyncClient(
        base_url=base_url,
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(None, connect=connect_timeout_s),
    )


async def read_capped(response: httpx.Response, cap: int = DEFAULT_BODY_CAP_BYTES) -> bytes:
    """Read a streamed body, refusing to buffer more than `cap` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge(f"body larger than {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
