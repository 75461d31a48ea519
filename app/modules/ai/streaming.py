"""An answer streamed to the caller as the upstream produces it.

The service returns an `AIStream` once the first text is in hand. Iterating `texts()` passes
the rest through; however the iteration ends (the upstream finished, failed, ran into the
request's deadline, or the caller went away), the stream is closed and `on_end` books it
exactly once (attempt, real cost, budget, ledger) and says which token counts it booked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from app.core.clock import Clock
from app.core.settings import ProviderName
from app.core.tracing import end_span
from app.modules.ai.errors import FailureKind, ProviderError
from app.modules.ai.providers.streaming import ProviderStream
from app.modules.ai.providers.tokens import CHARS_PER_TOKEN

# The ledger's error_type for a stream the caller stopped reading.
STREAM_CANCELLED = "cancelled"


def estimate_chars(chars: int) -> int:
    """Tokens for `chars` characters of output, when the upstream sent no usage."""
    return max(1, chars // CHARS_PER_TOKEN) if chars else 0


@dataclass(frozen=True, slots=True)
class StreamResult:
    """How a stream ended, for the books."""

    elapsed_s: float  # from the attempt's start to the end of the stream
    chars: int  # text passed to the caller
    usage: tuple[int, int] | None  # (prompt, completion) from the upstream, if it said
    finish_reason: str | None
    error: ProviderError | None = None
    cancelled: bool = False


class AIStream:
    _ended = True  # until __init__ completes: nothing to book for a half-built stream

    def __init__(
        self,
        stream: ProviderStream,
        provider: ProviderName,
        deadline: float,
        clock: Clock,
        started: float,
        on_end: Callable[[StreamResult], tuple[int, int]],
    ) -> None:
        self.provider = provider
        self._stream = stream
        self._deadline = deadline
        self._clock = clock
        self._started = started
        self._on_end = on_end
        self._chars = 0
        # (prompt, completion) tokens as booked when the stream ended: the upstream's counts,
        # or an estimate when it sent none.
        self.booked_usage = (0, 0)
        self._ended = False

    @property
    def model(self) -> str:
        return self._stream.model

    @property
    def finish_reason(self) -> str | None:
        return self._stream.finish_reason

    async def texts(self) -> AsyncGenerator[str, None]:
        """Each piece of text as it arrives. An upstream fault, or the request's deadline,
        raises ProviderError after the pieces that came before it."""
        error: ProviderError | None = None
        cancelled = True
        pieces = self._stream.texts()
        try:
            while True:
                remaining = self._deadline - self._clock.monotonic()
                try:
                    if remaining <= 0:
                        raise TimeoutError
                    async with asyncio.timeout(remaining):
                        text = await anext(pieces)
                except StopAsyncIteration:
                    break
                except TimeoutError:  # the request's deadline: nothing said about the provider
                    error = ProviderError(
                        FailureKind.CALLER_DEADLINE, "the request's deadline passed"
                    )
                    raise error from None
                except ProviderError as exc:
                    error = exc
                    raise
                self._chars += len(text)
                yield text
            cancelled = False
        finally:
            await self.aclose(error, cancelled=cancelled and error is None)

    async def aclose(self, error: ProviderError | None = None, *, cancelled: bool = True) -> None:
        """Close the upstream and book the stream; safe to call more than once."""
        if self._ended:
            return
        self._ended = True
        try:
            await self._stream.aclose()
        finally:
            self._book(error, cancelled=cancelled)

    def __del__(self) -> None:
        """A stream dropped without ever being read (its response never started) must still
        give back its reservation and get its ledger row."""
        if self._ended:
            return
        self._ended = True
        with contextlib.suppress(RuntimeError):  # no running loop: the connection dies with us
            asyncio.get_running_loop().create_task(self._stream.aclose())
        self._book(None, cancelled=True)

    def _book(self, error: ProviderError | None, *, cancelled: bool) -> None:
        try:
            self.booked_usage = self._on_end(
                StreamResult(
                    elapsed_s=self._clock.monotonic() - self._started,
                    chars=self._chars,
                    usage=self._stream.usage,
                    finish_reason=self._stream.finish_reason,
                    error=error,
                    cancelled=cancelled,
                )
            )
        finally:
            self._end_span(error, cancelled=cancelled)

    def _end_span(self, error: ProviderError | None, *, cancelled: bool) -> None:
        """End the attempt's GenAI span with what the whole stream used (the upstream's counts,
        or the estimate booked when it sent none, then flagged)."""
        span, self._stream.span = self._stream.span, None
        if span is None:  # tracing is off
            return
        prompt, completion = self.booked_usage
        attributes: dict[str, object] = {
            "gen_ai.response.model": self._stream.model,
            "gen_ai.usage.input_tokens": prompt,
            "gen_ai.usage.output_tokens": completion,
        }
        if self._stream.usage is None:
            attributes["gateway.usage_estimated"] = True
        if self._stream.finish_reason is not None:
            attributes["gen_ai.response.finish_reasons"] = (self._stream.finish_reason,)
        error_type = error.kind.value if error else (STREAM_CANCELLED if cancelled else None)
        end_span(span, error_type=error_type, attributes=attributes)
