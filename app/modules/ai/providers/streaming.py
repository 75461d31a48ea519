"""Streamed answers: Server-Sent Events read piece by piece, shared by every adapter.

A stream is *opened* once the upstream has answered 2xx and sent its first piece of text.
Everything that can go wrong before that (status errors, timeouts, a body that is not a
stream) is an ordinary classified failure the service fails over from; after it, the caller
already has text, so a fault ends the stream instead.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from opentelemetry.trace import Span

from app.core.http import DEFAULT_BODY_CAP_BYTES, UpstreamClient
from app.modules.ai.errors import FailureKind, ProviderError
from app.modules.ai.providers.base import (
    classify_transport_error,
    decode_json,
    encode_json,
    error_code,
    send_streaming,
)


@dataclass(frozen=True, slots=True)
class StreamPiece:
    """What one event carried; empty fields mean "not in this event"."""

    text: str = ""
    finish_reason: str | None = None
    usage: tuple[int, int] | None = None  # (prompt, completion) as the upstream counted them
    model: str | None = None


EventParser = Callable[[Any], StreamPiece]
# OpenAI's end-of-stream sentinel; Gemini just ends the body.
_DONE = b"[DONE]"


class ProviderStream:
    """One upstream answer arriving in pieces. `open` reads up to the first text; `texts`
    yields it and the rest. The upstream's usage and finish reason are kept as they pass."""

    def __init__(self, response: httpx.Response, parse: EventParser, model: str, cap: int) -> None:
        self._response = response
        self._events = _sse_data(response, cap)
        self._parse = parse
        self._first = ""
        self.model = model
        self.finish_reason: str | None = None
        self.usage: tuple[int, int] | None = None
        # The attempt's GenAI span, left open by the guard: a stream's token counts are known
        # only at its end, which is where its owner (AIStream) ends the span.
        self.span: Span | None = None

    async def open(self) -> None:
        """Read until the first text; a stream that ends before it is a bad response."""
        async for piece in self._pieces():
            if piece.text:
                self._first = piece.text
                return
        raise ProviderError(FailureKind.BAD_RESPONSE, "stream ended without any content")

    async def texts(self) -> AsyncGenerator[str, None]:
        """The first text, then each later one as it arrives."""
        yield self._first
        async for piece in self._pieces():
            if piece.text:
                yield piece.text

    async def aclose(self) -> None:
        await self._response.aclose()

    async def _pieces(self) -> AsyncIterator[StreamPiece]:
        try:
            async for data in self._events:
                if data == _DONE:
                    return
                piece = self._parse(decode_json(data))
                self._absorb(piece)
                yield piece
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc) from exc
        except aiohttp.ClientError as exc:
            raise ProviderError(FailureKind.CONNECTION, type(exc).__name__) from exc

    def _absorb(self, piece: StreamPiece) -> None:
        if piece.finish_reason:
            self.finish_reason = piece.finish_reason
        if piece.usage is not None:
            self.usage = piece.usage
        if piece.model:
            self.model = piece.model


def event_object(data: Any) -> dict[str, Any]:
    """A decoded event as the object every provider sends; an error object sent mid-stream
    (OpenAI's and Google's share the `{"error": {...}}` shape) is an upstream error."""
    if not isinstance(data, dict):
        raise ProviderError(FailureKind.BAD_RESPONSE, "stream event is not a JSON object")
    if isinstance(data.get("error"), dict):
        code = error_code(data)
        raise ProviderError(FailureKind.UPSTREAM_ERROR, "error event in the stream", code=code)
    return data


async def open_stream(
    client: UpstreamClient,
    path: str,
    *,
    auth: Mapping[str, str],
    payload: Mapping[str, Any],
    parse: EventParser,
    model: str,
    status_error: Callable[[httpx.Response, bytes], ProviderError],
    params: Mapping[str, str] | None = None,
    cap: int = DEFAULT_BODY_CAP_BYTES,
) -> ProviderStream:
    """POST a JSON request for an event stream, with the provider's `auth` headers, and open
    its answer (up to the first text)."""
    headers = {**auth, "content-type": "application/json", "accept": "text/event-stream"}
    response = await send_streaming(
        client,
        path,
        headers=headers,
        content=encode_json(payload),
        params=params,
        status_error=status_error,
    )
    stream = ProviderStream(response, parse, model, cap)
    try:
        await stream.open()
    except BaseException:
        await stream.aclose()
        raise
    return stream


async def _sse_data(response: httpx.Response, cap: int) -> AsyncIterator[bytes]:
    """The data of each event (multi-line data joined), per the SSE spec's line rules."""
    encoded = "content-encoding" in response.headers
    chunks = response.aiter_bytes() if encoded else response.aiter_raw()
    buffer = b""
    data: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > cap:
            raise ProviderError(FailureKind.BAD_RESPONSE, f"stream larger than {cap} bytes")
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r")
            if not line:
                if data:
                    yield b"\n".join(data)
                    data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
    if buffer.startswith(b"data:"):
        value = buffer.rstrip(b"\r")[5:]
        data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        yield b"\n".join(data)
