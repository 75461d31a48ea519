"""Client-side rate limits, so we stop before the upstream's 429 rather than after it.

A token bucket per key (requests and tokens per minute) and optionally per provider. At the
limit the call moves on at once; nothing here ever waits.
"""

from __future__ import annotations

from app.core.clock import Clock

SECONDS_PER_MINUTE = 60.0


class TokenBucket:
    """`per_minute` units, refilled continuously; a full bucket allows a burst of all of them."""

    def __init__(self, per_minute: float, clock: Clock) -> None:
        self._capacity = per_minute
        self._rate = per_minute / SECONDS_PER_MINUTE
        self._clock = clock
        self._level = per_minute
        self._at = clock.monotonic()

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._level = min(self._capacity, self._level + (now - self._at) * self._rate)
        self._at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` could be taken (0 if it can be now)."""
        self._refill()
        amount = min(amount, self._capacity)
        return max(0.0, (amount - self._level) / self._rate)

    def take(self, amount: float) -> None:
        self._level -= min(amount, self._capacity)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets for one key or one provider."""

    def __init__(self, clock: Clock, *, rpm: int | None, tpm: int | None) -> None:
        self._requests = TokenBucket(rpm, clock) if rpm else None
        self._tokens = TokenBucket(tpm, clock) if tpm else None

    def try_acquire(self, tokens: int) -> float:
        """Take one request and `tokens` tokens and return 0, or take nothing and return how
        long until both would be available."""
        wait = 0.0
        if self._requests is not None:
            wait = max(wait, self._requests.wait_for(1))
        if self._tokens is not None:
            wait = max(wait, self._tokens.wait_for(tokens))
        if wait > 0:
            return wait
        if self._requests is not None:
            self._requests.take(1)
        if self._tokens is not None:
            self._tokens.take(tokens)
        return 0.0


class Unlimited:
    """The limiter of a key or provider with no configured limit."""

    def try_acquire(self, tokens: int) -> float:
        return 0.0


def make_limiter(clock: Clock, *, rpm: int | None, tpm: int | None) -> RateLimiter | Unlimited:
    return RateLimiter(clock, rpm=rpm, tpm=tpm) if (rpm or tpm) else Unlimited()
