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
    """A bounded window of the last `max_samples` calls no older than `window_s` seconds."""

    def __init__(self, clock: Clock, *, max_samples: int = 200, window_s: float = 300.0) -> None:
        self._clock = clock
        self._window_s = window_s
        self._samples: deque[Sample] = deque(maxlen=max_samples)

    def record(self, latency_s: float, *, ok: bool) -> None:
        self._samples.append(Sample(self._clock.monotonic(), latency_s, ok))

    def recent(self) -> list[Sample]:
        cutoff = self._clock.monotonic() - self._window_s
        while self._samples and self._samples[0].at < cutoff:
            self._samples.popleft()
        return list(self._samples)

    def success_latencies(self) -> list[float]:
        return sorted(s.latency_s for s in self.recent() if s.ok)

    def latency_quantile(self, q: float) -> float | None:
        values = self.success_latencies()
        return percentile(values, q) if values else None

    def error_rate(self) -> float | None:
        samples = self.recent()
        if not samples:
            return None
        return sum(1 for s in samples if not s.ok) / len(samples)
