"""Recent outcomes per provider: the passive signal routing, timeouts and health read from.

Three kinds of latency are kept apart, because each bounds a different wait:

- whole non-streamed calls, by how much output the request asked for (its size class): the
  adaptive timeout of a call is learned only from calls of its own size, so 40 calls asking
  for 5 tokens never set the bound for one asking for 500;
- streams' time to their first text: what the adaptive timeout bounds when a stream opens;
- whole streams are outcomes only (error rate): a stream's length is the caller's reading
  and the answer's size, not the provider's speed, so it joins no latency window.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass

from app.core.clock import Clock

# Size classes of a request's output budget (max_tokens): class k holds budgets up to
# SMALLEST_CLASS_TOKENS << k; each class is twice as wide as the one before.
SMALLEST_CLASS_TOKENS = 8
# 8 << 14 = 131 072 tokens; anything larger shares the last class.
LARGEST_CLASS = 14
# Requests that set no max_tokens: the provider decides their length, so they are a class of
# their own, never mixed with bounded ones.
UNBOUNDED = LARGEST_CLASS + 1


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    latency_s: float
    ok: bool


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def size_class(budget: int | None) -> int:
    """The class of an output budget: 0 for up to 8 tokens, 1 up to 16, ... UNBOUNDED for
    a request without max_tokens."""
    if budget is None:
        return UNBOUNDED
    return min(LARGEST_CLASS, max(0, (budget - 1).bit_length() - 3))


def class_ceiling(index: int) -> int:
    """The largest budget of a bounded class."""
    return SMALLEST_CLASS_TOKENS << index


class LatencyWindow:
    """The last `max_samples` latencies, none older than `window_s`, kept sorted as well:
    every attempt reads the sorted copy, so it is updated in place (one bisect per sample in
    and out) rather than re-sorted after every call."""

    __slots__ = ("_clock", "_samples", "_sorted", "_window_s")

    def __init__(self, clock: Clock, *, max_samples: int, window_s: float) -> None:
        self._clock = clock
        self._window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, latency_s: float) -> None:
        samples = self._samples
        if len(samples) == samples.maxlen:  # the oldest is pushed out by this append
            self._forget(samples[0][1])
        samples.append((self._clock.monotonic(), latency_s))
        insort(self._sorted, latency_s)

    def sorted(self) -> list[float]:
        """Sorted latencies in the window; the caller must not modify the list."""
        samples = self._samples
        cutoff = self._clock.monotonic() - self._window_s
        while samples and samples[0][0] < cutoff:
            self._forget(samples.popleft()[1])
        return self._sorted

    def _forget(self, latency_s: float) -> None:
        del self._sorted[bisect_left(self._sorted, latency_s)]


class ProviderStats:
    """Bounded windows (the last `max_samples`, none older than `window_s` seconds) of all
    outcomes, for error rates, and of successes alone, for latencies.

    Successes keep their own windows so a burst of failures cannot push them out: a provider
    in an outage keeps the timeout it learned instead of falling back to the warm-up default.
    """

    def __init__(self, clock: Clock, *, max_samples: int = 200, window_s: float = 300.0) -> None:
        self._clock = clock
        self._window_s = window_s
        self._max_samples = max_samples
        self._samples: deque[Sample] = deque(maxlen=max_samples)
        # Whole non-streamed calls of every size: the provider's typical latency, for routing
        # by latency and for health.
        self._successes = LatencyWindow(clock, max_samples=max_samples, window_s=window_s)
        # The same calls by size class, for the adaptive timeout; made on first use.
        self._by_size: dict[int, LatencyWindow] = {}
        self._first_text = LatencyWindow(clock, max_samples=max_samples, window_s=window_s)

    def record(self, latency_s: float, *, ok: bool, timed: bool = True) -> None:
        """One outcome. A success joins the latency window unless `timed` is False (a whole
        stream: its length says nothing about the provider's speed)."""
        self._samples.append(Sample(self._clock.monotonic(), latency_s, ok))
        if ok and timed:
            self._successes.add(latency_s)

    def record_sized(self, latency_s: float, budget: int | None) -> None:
        """A successful non-streamed call that asked for at most `budget` output tokens.

        Its latency is stretched to its class's largest budget, as if the time grew in
        proportion to the tokens asked for (at most twice, the width of a class): a call at
        the top of a class is then never judged by faster calls at its bottom."""
        index = size_class(budget)
        if budget is not None and budget > 0:
            latency_s *= max(1.0, class_ceiling(index) / budget)
        window = self._by_size.get(index)
        if window is None:
            window = LatencyWindow(
                clock=self._clock, max_samples=self._max_samples, window_s=self._window_s
            )
            self._by_size[index] = window
        window.add(latency_s)

    def record_first_text(self, latency_s: float) -> None:
        """A stream's time from the call to its first text."""
        self._first_text.add(latency_s)

    def sized_latencies(self, budget: int | None) -> list[float]:
        """Sorted (stretched) latencies of calls in `budget`'s size class; empty if none."""
        window = self._by_size.get(size_class(budget))
        return window.sorted() if window is not None else []

    def size_windows(self) -> list[list[float]]:
        """Every size class's sorted latencies (for the tightest timeout in force)."""
        return [window.sorted() for window in self._by_size.values()]

    def first_text_latencies(self) -> list[float]:
        """Sorted times to first text of recent streams."""
        return self._first_text.sorted()

    def _trim(self, samples: deque[Sample]) -> list[Sample]:
        cutoff = self._clock.monotonic() - self._window_s
        while samples and samples[0].at < cutoff:
            samples.popleft()
        return list(samples)

    def recent(self) -> list[Sample]:
        return self._trim(self._samples)

    def success_latencies(self) -> list[float]:
        """Sorted latencies of whole non-streamed calls; the caller must not modify it."""
        return self._successes.sorted()

    def latency_quantile(self, q: float) -> float | None:
        values = self.success_latencies()
        return percentile(values, q) if values else None

    def error_rate(self) -> float | None:
        samples = self.recent()
        if not samples:
            return None
        return sum(1 for s in samples if not s.ok) / len(samples)
