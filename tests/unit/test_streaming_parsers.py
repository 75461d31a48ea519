"""The SSE reader and the per-provider chunk parsers, on bytes split the way networks split
them: anywhere, including inside a line ending."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

import httpx
import pytest

from app.core.clock import ManualClock
from app.core.settings import ProviderName
from app.modules.ai.errors import FailureKind, ProviderError
from app.modules.ai.providers.gemini import parse_stream_event
from app.modules.ai.providers.openai_compatible import parse_chat_chunk
from app.modules.ai.providers.streaming import ProviderStream, StreamPiece, _sse_data
from app.modules.ai.streaming import AIStream, StreamResult

WIRE = (
    b": keep-alive comment\r\n"
    b"event: message\r\n"
    b'data: {"a": 1}\r\n'
    b"\r\n"
    b"data: first line\n"
    b"data:second line\n"
    b"\n"
    b"id: 7\n"
    b"data: [DONE]"  # the last event, without its blank line
)


def _response(chunks: list[bytes]) -> httpx.Response:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


async def _events(chunks: list[bytes], cap: int = 1 << 20) -> list[bytes]:
    return [data async for data in _sse_data(_response(chunks), cap)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(WIRE)])
async def test_events_survive_any_split(size: int) -> None:
    chunks = [WIRE[i : i + size] for i in range(0, len(WIRE), size)]
    assert await _events(chunks) == [b'{"a": 1}', b"first line\nsecond line", b"[DONE]"]


async def test_a_stream_past_its_cap_is_a_bad_response() -> None:
    with pytest.raises(ProviderError) as error:
        await _events([b"data: x\n\n" * 100], cap=50)
    assert error.value.kind is FailureKind.BAD_RESPONSE


def test_openai_chunks_text_finish_and_usage() -> None:
    text = parse_chat_chunk(
        {"model": "m-1", "choices": [{"index": 0, "delta": {"content": "Hi"}}], "usage": None}
    )
    assert text == StreamPiece("Hi", None, None, "m-1")
    finish = parse_chat_chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    assert finish.finish_reason == "stop"
    assert finish.text == ""
    usage = parse_chat_chunk(
        {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 30}}
    )
    assert usage.usage == (12, 30)
    # Azure opens with a content-filter chunk: no choices, no model.
    assert parse_chat_chunk({"choices": [], "model": "", "prompt_filter_results": []}) == (
        StreamPiece()
    )


def test_an_error_event_mid_stream_is_an_upstream_error() -> None:
    with pytest.raises(ProviderError) as error:
        parse_chat_chunk({"error": {"message": "overloaded", "code": "server_error"}})
    assert error.value.kind is FailureKind.UPSTREAM_ERROR
    assert error.value.code == "server_error"
    with pytest.raises(ProviderError) as bad:
        parse_chat_chunk(["not", "an", "object"])
    assert bad.value.kind is FailureKind.BAD_RESPONSE


def test_gemini_events_text_finish_and_cumulative_usage() -> None:
    early = parse_stream_event(
        {
            "candidates": [{"content": {"parts": [{"text": "Ba"}, {"text": "se"}]}}],
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
            "modelVersion": "gemini-1.5-flash-002",
        }
    )
    assert early == StreamPiece("Base", None, (9, 0), "gemini-1.5-flash-002")
    last = parse_stream_event(
        {
            "candidates": [{"content": {"parts": [{"text": "."}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 14},
        }
    )
    assert (last.text, last.finish_reason, last.usage) == (".", "stop", (9, 14))
    blocked = parse_stream_event({"promptFeedback": {"blockReason": "SAFETY"}})
    assert blocked.text == ""


# -- AIStream: each stream is booked exactly once, however it ends -------------------------

OPENAI_WIRE = [
    b'data: {"model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n',
    b'data: {"choices": [{"index": 0, "delta": {"content": "Hello "}}]}\n\n',
    b'data: {"choices": [{"index": 0, "delta": {"content": "world"}}]}\n\n',
    b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n',
    b'data: {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}\n\n',
    b"data: [DONE]\n\n",
]


async def _opened(clock: ManualClock, booked: list[StreamResult]) -> AIStream:
    stream = ProviderStream(_response(OPENAI_WIRE), parse_chat_chunk, "m", 1 << 20)
    await stream.open()

    def on_end(result: StreamResult) -> tuple[int, int]:
        booked.append(result)
        return result.usage or (0, 0)

    start = clock.monotonic()
    return AIStream(stream, ProviderName.OPENAI, start + 10, clock, start, on_end)


async def test_a_stream_read_to_its_end_is_booked_once_with_the_upstream_usage() -> None:
    clock, booked = ManualClock(), list[StreamResult]()
    ai_stream = await _opened(clock, booked)
    texts = [text async for text in ai_stream.texts()]
    await ai_stream.aclose()  # a second close books nothing more
    assert texts == ["Hello ", "world"]
    assert len(booked) == 1
    assert (booked[0].usage, booked[0].finish_reason, booked[0].chars) == ((5, 2), "stop", 11)
    assert (booked[0].error, booked[0].cancelled) == (None, False)
    assert ai_stream.booked_usage == (5, 2)


async def test_the_deadline_ends_a_stream_as_the_callers_after_its_first_text() -> None:
    clock, booked = ManualClock(), list[StreamResult]()
    ai_stream = await _opened(clock, booked)
    texts = ai_stream.texts()
    assert await anext(texts) == "Hello "
    clock.advance(11)  # past the 10 s deadline
    with pytest.raises(ProviderError) as error:
        await anext(texts)
    # The request's deadline, not the provider's: no verdict on its health.
    assert error.value.kind is FailureKind.CALLER_DEADLINE
    assert not error.value.kind.is_provider_fault
    assert len(booked) == 1
    assert (booked[0].error, booked[0].chars) == (error.value, 6)


async def test_a_caller_who_stops_reading_is_booked_as_cancelled() -> None:
    clock, booked = ManualClock(), list[StreamResult]()
    ai_stream = await _opened(clock, booked)
    texts = ai_stream.texts()
    assert await anext(texts) == "Hello "
    await texts.aclose()
    assert [(b.cancelled, b.error, b.chars) for b in booked] == [(True, None, 6)]


async def test_a_stream_never_read_is_still_booked_when_dropped() -> None:
    clock, booked = ManualClock(), list[StreamResult]()
    ai_stream = await _opened(clock, booked)
    del ai_stream
    gc.collect()
    assert [(b.cancelled, b.chars) for b in booked] == [(True, 0)]
