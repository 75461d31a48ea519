"""The one way this service builds outbound HTTP clients and sends through them.

httpx's default transport collapses past ~240 requests/s on one core (httpcore pool scans,
see STYLE.md), so every upstream client runs the httpx API over aiohttp's pool. Clients never
read proxies or netrc from the environment and never retry on their own: the guard owns retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

# Responses bigger than this (decoded) are not an LLM answer we want to hold in memory.
DEFAULT_BODY_CAP_BYTES = 8 * 1024 * 1024
# Said explicitly, so what we accept never depends on which decoders happen to be installed
# (httpx advertises br and zstd when their modules import). The body is decoded by httpx,
# chunk by chunk, and the cap counts decoded bytes: a small gzip bomb cannot fill memory.
ACCEPT_ENCODING = "gzip"
# Distinct paths per client are bounded by configuration (models, deployments), not callers.
_URL_CACHE_SIZE = 1024


class BodyTooLarge(Exception):
    """The upstream sent more than we agreed to read."""


class UpstreamClient(httpx.AsyncClient):
    """An httpx client whose requests are built once per path and sent straight to its
    transport.

    `build` resolves a path against the base URL once per distinct path and skips the
    per-call merging of client defaults: the request carries exactly the headers we give it.
    `dispatch` skips what `AsyncClient.send` wraps around the transport: the cookie jar, auth
    flows, redirects and event hooks. The gateway must have none of them (one client serves
    every caller and key: a cookie set for one key must not ride along with the next), and
    together they cost about a sixth of the upstream call's CPU.
    """

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self._upstream = transport
        self._timeout_extension = {"timeout": self.timeout.as_dict()}
        self._resolve = lru_cache(maxsize=_URL_CACHE_SIZE)(self._absolute_url)

    async def dispatch(self, request: httpx.Request) -> httpx.Response:
        """The response with its body still streaming; the caller closes it."""
        return await self._upstream.handle_async_request(request)

    def _absolute_url(self, path: str, query: tuple[tuple[str, str], ...]) -> httpx.URL:
        url = self.base_url.join(path)  # base_url always ends in "/" in httpx
        return url.copy_merge_params(dict(query)) if query else url

    def build(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        url = self._resolve(path, tuple(params.items()) if params else ())
        return httpx.Request(
            method,
            url,
            headers={"accept-encoding": ACCEPT_ENCODING, **headers},
            content=content,
            extensions=self._timeout_extension,
        )


def make_upstream_client(
    base_url: str,
    *,
    max_connections: int,
    connect_timeout_s: float = 5.0,
) -> UpstreamClient:
    """One client per upstream, created at start and closed on shutdown.

    Overall deadlines are enforced by the caller with `asyncio.timeout`; the per-phase
    timeouts here only stop a connect attempt from outliving its usefulness.
    """
    transport = AiohttpTransport(
        limits=httpx.Limits(max_connections=max_connections, keepalive_expiry=30.0),
        trust_env=False,
        retries=0,
    )
    return UpstreamClient(
        base_url=base_url,
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(None, connect=connect_timeout_s),
    )


async def read_capped(response: httpx.Response, cap: int = DEFAULT_BODY_CAP_BYTES) -> bytes:
    """Read a streamed body, decoded per its Content-Encoding, refusing more than `cap` bytes."""
    chunks: list[bytes] = []
    size = 0
    # Most answers come uncompressed: skip httpx's decoder and re-chunker for those.
    encoded = "content-encoding" in response.headers
    async for chunk in response.aiter_bytes() if encoded else response.aiter_raw():
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge(f"body larger than {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
