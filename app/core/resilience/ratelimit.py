"""Client-side rate limits, so we stop before the upstream's 429 rather than after it.

A token bucket per key (requests and tokens per minute), optionally a daily request quota
(the day of a configured time zone), per key or per caller. At the limit the call moves on
at once; nothing here ever waits.

These limiters count in this process and do no I/O: `try_acquire` is synchronous, and
`acquire` (the `Limiter` protocol the guards await) only wraps it, so the embedded default
costs what it always did. `app.core.resilience.shared_limits` implements the same protocol
on Redis for several processes, and falls back to these (with a share of each limit) when
Redis is away.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Protocol

from app.core.clock import Clock

SECONDS_PER_MINUTE = 60.0


class Limiter(Protocol):
    """What a guard asks of a key's (or a caller's) limiter."""

    async def acquire(self, tokens: int) -> float:
        """Take one request and `tokens` tokens and return 0, or take nothing and return how
        many seconds until they would be available."""
        ...

    def quota_usage(self) -> tuple[float, float] | None:
        """(requests used today, daily quota), or None without a daily quota."""
        ...

    def request_window(self) -> tuple[float, float] | None:
        """(requests left now, seconds until the per-minute request limit is whole again),
        or None without a request rate: what x-ratelimit-*-requests headers tell a caller."""
        ...


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

    def debit(self, amount: float) -> None:
        """Take `amount` whether or not it is there (the level may go below zero): units
        spent elsewhere, e.g. granted by the shared limit, that this bucket must know of."""
        self._refill()
        self.take(amount)

    def fill(self) -> float:
        """How full the bucket is now, as a share of its capacity (below 0 when overdrawn)."""
        self._refill()
        return self._level / self._capacity

    def window(self) -> tuple[float, float]:
        """(units left now, seconds until the bucket is full again)."""
        self._refill()
        return self._level, max(0.0, (self._capacity - self._level) / self._rate)

    def set_fill(self, fraction: float) -> None:
        self._refill()
        self._level = min(1.0, fraction) * self._capacity


def day_of(clock: Clock, tz: tzinfo) -> tuple[str, float]:
    """Today's date in `tz` (ISO, e.g. '2026-03-10') and the seconds until it ends, computed
    in UTC so a day with a daylight-saving change has its true length."""
    wall = clock.now().astimezone(tz)
    today = wall.date()
    tomorrow = datetime.combine(today + timedelta(days=1), time(0), tzinfo=tz)
    left = (tomorrow.astimezone(UTC) - wall.astimezone(UTC)).total_seconds()
    return today.isoformat(), max(left, 0.001)


class Day:
    """The current day label, computed from the wall clock once a day and then checked
    against the monotonic clock: a hot path asks without building a datetime."""

    def __init__(self, clock: Clock, tz: tzinfo) -> None:
        self._clock = clock
        self._tz = tz
        self._label = ""
        self._ends_at = float("-inf")  # monotonic

    def current(self) -> tuple[str, float]:
        """(today's label, seconds until it ends)."""
        now = self._clock.monotonic()
        if now >= self._ends_at:
            self._label, left = day_of(self._clock, self._tz)
            self._ends_at = now + left
        return self._label, self._ends_at - now


class DailyQuota:
    """`per_day` requests per calendar day; the count starts again when the day turns.

    `per_day` and `used` may be fractions: a replica cut off from Redis gets a share of a
    quota (see shared_limits)."""

    def __init__(
        self, per_day: float, clock: Clock, tz: tzinfo, *, used: float = 0.0, day: str = ""
    ) -> None:
        self.per_day = per_day
        self._day = Day(clock, tz)
        self._label, _ = self._day.current()
        # `used` counts for `day` only (today when not given).
        self.used = used if day in ("", self._label) else 0.0

    def _roll(self) -> float:
        label, left = self._day.current()
        if label != self._label:
            self._label = label
            self.used = 0.0
        return left

    def wait(self) -> float:
        """0 if one more request fits today, else the seconds until the day resets."""
        left = self._roll()
        return 0.0 if self.used + 1 <= self.per_day else left

    def take(self) -> None:
        self.used += 1

    def usage(self) -> tuple[float, float]:
        self._roll()
        return self.used, self.per_day


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets, and an optional daily request
    quota, for one key, caller or provider. All or nothing: a refusal takes from none."""

    def __init__(
        self,
        clock: Clock,
        *,
        rpm: float | None,
        tpm: float | None,
        quota: DailyQuota | None = None,
    ) -> None:
        self._requests = TokenBucket(rpm, clock) if rpm else None
        self._tokens = TokenBucket(tpm, clock) if tpm else None
        self._quota = quota

    def try_acquire(self, tokens: int) -> float:
        """Take one request and `tokens` tokens and return 0, or take nothing and return how
        long until both would be available."""
        wait = 0.0
        if self._requests is not None:
            wait = max(wait, self._requests.wait_for(1))
        if self._tokens is not None:
            wait = max(wait, self._tokens.wait_for(tokens))
        if self._quota is not None:
            wait = max(wait, self._quota.wait())
        if wait > 0:
            return wait
        if self._requests is not None:
            self._requests.take(1)
        if self._tokens is not None:
            self._tokens.take(tokens)
        if self._quota is not None:
            self._quota.take()
        return 0.0

    async def acquire(self, tokens: int) -> float:
        """`try_acquire` for callers that also take a shared limiter: no I/O here."""
        return self.try_acquire(tokens)

    def debit(self, tokens: int) -> None:
        """One request and `tokens` tokens granted elsewhere, taken from the per-minute
        buckets unchecked (not from the daily quota)."""
        if self._requests is not None:
            self._requests.debit(1)
        if self._tokens is not None:
            self._tokens.debit(tokens)

    def fill_like(self, other: RateLimiter) -> None:
        """Make each per-minute bucket as full as `other`'s (the same limits rescaled: a
        replica's share when the number of replicas changes keeps what it used)."""
        for mine, theirs in ((self._requests, other._requests), (self._tokens, other._tokens)):
            if mine is not None and theirs is not None:
                mine.set_fill(theirs.fill())

    def quota_usage(self) -> tuple[float, float] | None:
        return None if self._quota is None else self._quota.usage()

    def request_window(self) -> tuple[float, float] | None:
        return None if self._requests is None else self._requests.window()


class Unlimited:
    """The limiter of a key or provider with no configured limit."""

    def try_acquire(self, tokens: int) -> float:
        return 0.0

    async def acquire(self, tokens: int) -> float:
        return 0.0

    def quota_usage(self) -> tuple[float, float] | None:
        return None

    def request_window(self) -> tuple[float, float] | None:
        return None


def make_limiter(
    clock: Clock,
    *,
    rpm: float | None,
    tpm: float | None,
    rpd: float | None = None,
    tz: tzinfo = UTC,
) -> RateLimiter | Unlimited:
    """A limiter for the limits configured (`rpd`: requests per day in `tz`), or Unlimited."""
    if not (rpm or tpm or rpd):
        return Unlimited()
    quota = DailyQuota(rpd, clock, tz) if rpd else None
    return RateLimiter(clock, rpm=rpm, tpm=tpm, quota=quota)
