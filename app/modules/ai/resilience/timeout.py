"""The adaptive timeout: p95 of recent successful latencies x 1.5, clamped.

A provider that slows down gets more time (up to the max); one that hangs is cut where its
own recent history says an answer should have come, so the request can still fail over.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.modules.ai.stats import percentile


@dataclass(frozen=True, slots=True)
class TimeoutPolicy:
    default_s: float  # until there are enough samples: the provider's configured timeout
    min_s: float
    max_s: float
    multiplier: float = 1.5
    quantile: float = 0.95
    min_samples: int = 20

    def current(self, sorted_latencies_s: list[float]) -> float:
        if len(sorted_latencies_s) < self.min_samples:
            return self._clamp(self.default_s)
        return self._clamp(percentile(sorted_latencies_s, self.quantile) * self.multiplier)

    def _clamp(self, seconds: float) -> float:
        """The clamp holds for the warm-up default too: a provider never gets more than
        max_s, however it is configured or however little we know of it."""
        return min(self.max_s, max(self.min_s, seconds))
