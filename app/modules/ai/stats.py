"""Recent outcomes per provider: the passive signal routing, timeouts and health read from."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from app.core.clock import Clock


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    latency_s: float
    ok: bool


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class ProviderStats:
    """Bounded windows (the last `max_samples`, none older than `window_s` seconds) of all
    outcomes, for error rates, and of successes alone, for latencies.

    Successes keep their own window so a burst of failures cannot push them out: a provider
    in an outage keeps the timeout it learned instead of falling back to the warm-up default.
    """

    def __init__(self, clock: Clock, *, max_samples: int = 200, window_s: float = 300.0) -> None:
        self._clock = clock
        self._window_s = window_s
        self._samples: deque[Sample] = deque(maxlen=max_samples)
        self._successes: deque[Sample] = deque(maxlen=max_samples)
        # Sorted latencies of the success window, rebuilt only when it changes: every
        # attempt reads them (the adaptive timeout), far fewer change them.
        self._sorted: list[float] | None = None

    def record(self, latency_s: float, *, ok: bool) -> None:
        sample = Sample(self._clock.monotonic(), latency_s, ok)
        self._samples.append(sample)
        if ok:
            self._successes.append(sample)
            self._sorted = None

    def _trim(self, samples: deque[Sample]) -> list[Sample]:
        cutoff = self._clock.monotonic() - self._window_s
        while samples and samples[0].at < cutoff:
            samples.popleft()
        return list(samples)

    def recent(self) -> list[Sample]:
        return self._trim(self._samples)

    def success_latencies(self) -> list[float]:
        """Sorted; the caller must not modify the list."""
        cutoff = self._clock.monotonic() - self._window_s
        if self._successes and self._successes[0].at < cutoff:
            self._trim(self._successes)
            self._sorted = None
        if self._sorted is None:
            self._sorted = sorted(s.latency_s for s in self._successes)
        return self._sorted

    def latency_quantile(self, q: float) -> float | None:
        values = self.success_latencies()
        return percentile(values, q) if values else None

    def error_rate(self) -> float | None:
        samples = self.recent()
        if not samples:
            return None
        return sum(1 for s in samples if not s.ok) / len(samples)
