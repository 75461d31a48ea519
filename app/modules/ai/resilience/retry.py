"""Retries: exponential backoff with full jitter, and a budget so a failing upstream is not
hammered (retries stay under a share of recent requests, as Envoy's retry budget does)."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from app.core.clock import Clock


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    base_s: float = 0.2
    cap_s: float = 5.0
    max_retries: int = 2

    def delay(self, retry: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        """Delay before retry number `retry` (1-based): uniform in [0, min(cap, base*2^(n-1))],
        but never sooner than the upstream's Retry-After."""
        ceiling = min(self.cap_s, self.base_s * 2 ** (retry - 1))
        jittered = rng.uniform(0.0, ceiling)
        return max(jittered, retry_after_s or 0.0)


class RetryBudget:
    """Allows a retry only while retries in the window stay under `ratio` of requests
    (with a floor of `min_retries`, so a quiet service can still retry at all)."""

    def __init__(
        self, clock: Clock, *, ratio: float = 0.2, min_retries: int = 3, window_s: float = 10.0
    ) -> None:
        self._clock = clock
        self._ratio = ratio
        self._min = min_retries
        self._window_s = window_s
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self) -> None:
        cutoff = self._clock.monotonic() - self._window_s
        for events in (self._requests, self._retries):
            while events and events[0] < cutoff:
                events.popleft()

    def record_request(self) -> None:
        self._trim()  # keeps memory bounded by the window, not by uptime
        self._requests.append(self._clock.monotonic())

    def try_spend(self) -> bool:
        self._trim()
        allowed = max(self._min, int(len(self._requests) * self._ratio))
        if len(self._retries) >= allowed:
            return False
        self._retries.append(self._clock.monotonic())
        return True
