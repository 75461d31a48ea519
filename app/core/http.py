"""The one way this service builds outbound HTTP clients and sends through them.

httpx's default transport collapses past ~240 requests/s on one core (httpcore pool scans,
see STYLE.md), so every upstream client runs the httpx API over aiohttp's pool. Clients never
read proxies or netrc from the environment and never retry on their own: the guard owns retries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar, Token
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ConnectionKey
    from aiohttp.tracing import Trace

# Idle kept-alive upstream connections are closed after this.
KEEPALIVE_EXPIRY_S = 30.0
# Responses bigger than this (decoded) are not an LLM answer we want to hold in memory.
DEFAULT_BODY_CAP_BYTES = 8 * 1024 * 1024
# Said explicitly, so what we accept never depends on which decoders happen to be installed
# (httpx advertises br and zstd when their modules import). The body is decoded by httpx,
# chunk by chunk, and the cap counts decoded bytes: a small gzip bomb cannot fill memory.
ACCEPT_ENCODING = "gzip"
# Paths resolved and kept per client. Pinned model names make them caller-chosen (within the
# strict name rule), so the cache is what bounds them.
_URL_CACHE_SIZE = 1024
# A relative path we agree to send: non-empty segments of RFC 3986 pchars (unreserved,
# sub-delims, ':', '@', percent-escapes), separated by single '/'. No '?', '#', '\\', spaces,
# non-ASCII, leading '/' (a network-path reference names another host) or empty segment.
_PCHARS = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+"
_SAFE_PATH = re.compile(rf"{_PCHARS}(?:/{_PCHARS})*")
_DOT_SEGMENTS = frozenset({".", ".."})


class SlotWatch(Protocol):
    """Told when the call it watches starts and stops waiting for a free connection of its
    client's pool: time in that queue is our own saturation, not the upstream's."""

    def queued(self) -> None: ...

    def acquired(self) -> None: ...


# The watch of the call running in this task, if any (set by `watch_slot`). A context
# variable, because the pool is reached through httpx and aiohttp, which carry nothing of ours.
_SLOT_WATCH: ContextVar[SlotWatch | None] = ContextVar("upstream_slot_watch", default=None)


def watch_slot(watch: SlotWatch) -> Token[SlotWatch | None]:
    """From now on, calls made in this task (and tasks it starts) tell `watch` about their
    wait for a pooled connection; pass the token to `unwatch_slot` when the call is over."""
    return _SLOT_WATCH.set(watch)


def unwatch_slot(token: Token[SlotWatch | None]) -> None:
    _SLOT_WATCH.reset(token)


if not hasattr(aiohttp.TCPConnector, "_wait_for_available_connection"):  # pragma: no cover
    # Without the hook every wait for a pooled connection would silently count as upstream
    # time again (and trip breakers on our own saturation): refuse to start instead.
    raise ImportError(
        "aiohttp.TCPConnector._wait_for_available_connection is gone: WatchedConnector "
        "(app/core/http.py) needs another way to see pool waits"
    )


class WatchedConnector(aiohttp.TCPConnector):
    """aiohttp's pool, telling a watched call when it queues for a connection slot (every
    connection is busy) and when it gets one.

    aiohttp calls `_wait_for_available_connection` only when the pool is full, so a call
    that finds a free slot pays nothing. (A TraceConfig would see the same two events through
    a public API, but costs every request a Trace object and a dozen awaited signals.) The
    hook's existence is checked at import."""

    async def _wait_for_available_connection(self, key: ConnectionKey, traces: list[Trace]) -> None:
        watch = _SLOT_WATCH.get()
        if watch is None:
            await super()._wait_for_available_connection(key, traces)
            return
        watch.queued()
        await super()._wait_for_available_connection(key, traces)
        watch.acquired()


class BodyTooLarge(Exception):
    """The upstream sent more than we agreed to read."""


class UnsafeUpstreamPath(ValueError):
    """A path (or a segment for one) that could leave the endpoint it was built for."""


def path_segment(value: str) -> str:
    """`value` as exactly one URL path segment.

    Every character outside RFC 3986's unreserved set is percent-encoded, so `/ ? # % \\`
    and non-ASCII cannot end the segment, the path, or start a query or fragment. `.` and `..`
    are refused: they are unreserved, stay dots when encoded, and would climb the path. Model
    names are validated long before this; this is the last line, in the adapters."""
    if not value or value in _DOT_SEGMENTS:
        raise UnsafeUpstreamPath("an empty or dot segment cannot name an upstream resource")
    return quote(value, safe="")


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
        """`path` under the base URL, refused unless it stays exactly where it was written.

        httpx's join resolves `..`, turns `?`/`#` into a query or fragment and a leading `//`
        into another host; any of those would send our key to another endpoint. So the path
        must be plain pchars with no dot segment (also percent-encoded ones, which some
        servers decode), and the joined URL must be the base URL with the path appended."""
        if not _SAFE_PATH.fullmatch(path) or any(
            unquote(segment) in _DOT_SEGMENTS for segment in path.split("/")
        ):
            raise UnsafeUpstreamPath("the upstream path has characters or segments not allowed")
        base = self.base_url  # always ends in "/" in httpx
        url = base.join(path)
        if url.raw_path != base.raw_path + path.encode("ascii") or (
            url.scheme,
            url.host,
            url.port,
        ) != (base.scheme, base.host, base.port):
            raise UnsafeUpstreamPath("the upstream path does not stay under the base URL")
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
        """The request for `path` under the base URL. Raises UnsafeUpstreamPath for a path
        that would leave it (see `_absolute_url`); build paths with `path_segment`."""
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
    timeouts here only stop a connect attempt from outliving its usefulness. The pool is a
    `WatchedConnector`, so a guard can tell a wait for a free connection from the upstream's
    own time (`watch_slot`).
    """
    ssl_context = httpx.create_ssl_context(trust_env=False)

    def session() -> aiohttp.ClientSession:
        """Built on first use, inside the running loop (aiohttp needs one); what
        AiohttpTransport would build from `limits`, with our connector."""
        connector = WatchedConnector(
            limit=max_connections, keepalive_timeout=KEEPALIVE_EXPIRY_S, ssl=ssl_context
        )
        return aiohttp.ClientSession(connector=connector, trust_env=False)

    transport = AiohttpTransport(client=session, trust_env=False, retries=0)
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
