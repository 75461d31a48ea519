"""The small frozen policies, without I/O: timeout, backoff, retry budget, rate limit."""

from __future__ import annotations

import random

import pytest

from app.core.clock import ManualClock
from app.core.resilience.ratelimit import RateLimiter, make_limiter
from app.modules.ai.resilience.retry import BackoffPolicy, RetryBudget
from app.modules.ai.resilience.timeout import TimeoutPolicy
from app.modules.ai.stats import ProviderStats, percentile

POLICY = TimeoutPolicy(default_s=5.0, min_s=1.0, max_s=30.0, min_samples=20)


def test_percentile_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([3.0], 0.95) == 3.0


def test_timeout_uses_the_default_until_enough_samples() -> None:
    assert POLICY.current([]) == 5.0
    assert POLICY.current([2.0] * 19) == 5.0


def test_timeout_is_p95_times_one_and_a_half() -> None:
    latencies = sorted([2.0] * 19 + [4.0])  # p95 = 2.0 (nearest rank 19 of 20)
    assert POLICY.current(latencies) == pytest.approx(3.0)
    latencies = sorted([2.0] * 18 + [4.0, 4.0])  # p95 = 4.0
    assert POLICY.current(latencies) == pytest.approx(6.0)


@pytest.mark.parametrize(("latency", "expected"), [(0.01, 1.0), (100.0, 30.0)])
def test_timeout_is_clamped(latency: float, expected: float) -> None:
    assert POLICY.current([latency] * 50) == expected


def test_stats_window_forgets_old_samples() -> None:
    clock = ManualClock()
    stats = ProviderStats(clock, max_samples=100, window_s=60)
    stats.record(1.0, ok=True)
    clock.advance(30)
    stats.record(2.0, ok=False)
    assert stats.error_rate() == 0.5
    clock.advance(31)
    assert stats.success_latencies() == []
    assert stats.error_rate() == 1.0
    stats_small = ProviderStats(clock, max_samples=3, window_s=60)
    for value in (1.0, 2.0, 3.0, 4.0):
        stats_small.record(value, ok=True)
    assert stats_small.success_latencies() == [2.0, 3.0, 4.0]


def test_backoff_is_full_jitter_within_exponential_bounds() -> None:
    policy = BackoffPolicy(base_s=0.2, cap_s=1.0, max_retries=5)
    rng = random.Random(7)
    for retry, ceiling in [(1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (5, 1.0)]:
        delays = [policy.delay(retry, rng) for _ in range(500)]
        assert all(0 <= d <= ceiling for d in delays)
        # Full jitter spreads over the whole range, not around the ceiling.
        assert min(delays) < ceiling * 0.1
        assert max(delays) > ceiling * 0.9


def test_backoff_never_sooner_than_retry_after() -> None:
    policy = BackoffPolicy(base_s=0.2, cap_s=1.0)
    rng = random.Random(1)
    assert all(policy.delay(1, rng, retry_after_s=3.0) == 3.0 for _ in range(50))


def test_retry_budget_is_a_share_of_recent_requests() -> None:
    clock = ManualClock()
    budget = RetryBudget(clock, ratio=0.2, min_retries=2, window_s=10)
    # Quiet service: the floor allows a couple of retries.
    assert budget.try_spend()
    assert budget.try_spend()
    assert not budget.try_spend()
    for _ in range(50):
        budget.record_request()
    spent = sum(budget.try_spend() for _ in range(100))
    assert spent == 10 - 2  # 20 % of 50, of which 2 were already spent
    clock.advance(10.1)  # the window moves on: old requests and retries are forgotten
    assert budget.try_spend()


def test_rate_limiter_requests_per_minute() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock, rpm=30, tpm=None)
    assert all(limiter.try_acquire(10) == 0 for _ in range(30))
    wait = limiter.try_acquire(10)
    assert wait == pytest.approx(2.0)  # one request refills every 60/30 s
    clock.advance(2.0)
    assert limiter.try_acquire(10) == 0
    assert limiter.try_acquire(10) > 0


def test_rate_limiter_tokens_per_minute() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock, rpm=None, tpm=6000)
    assert limiter.try_acquire(5000) == 0
    wait = limiter.try_acquire(2000)  # 1000 left; 1000 more at 100/s
    assert wait == pytest.approx(10.0)
    clock.advance(10)
    assert limiter.try_acquire(2000) == 0


def test_refused_acquire_takes_nothing() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock, rpm=2, tpm=100)
    assert limiter.try_acquire(90) == 0
    assert limiter.try_acquire(50) > 0  # tokens short: the request slot must not be taken
    assert limiter.try_acquire(10) == 0  # still one request and 10 tokens left


def test_no_limit_configured_never_limits() -> None:
    limiter = make_limiter(ManualClock(), rpm=None, tpm=None)
    assert all(limiter.try_acquire(10**6) == 0 for _ in range(1000))


def test_the_warm_up_default_is_clamped_too() -> None:
    policy = TimeoutPolicy(default_s=5.0, min_s=0.5, max_s=1.0, min_samples=20)
    assert policy.current([]) == 1.0
    assert TimeoutPolicy(default_s=0.1, min_s=0.5, max_s=1.0).current([]) == 0.5


def test_a_burst_of_failures_does_not_erase_the_learned_latencies() -> None:
    clock = ManualClock()
    stats = ProviderStats(clock, max_samples=20, window_s=300)
    for _ in range(20):
        stats.record(0.2, ok=True)
    for _ in range(50):  # an outage: every call times out
        stats.record(1.0, ok=False)
    assert stats.success_latencies() == [0.2] * 20
    assert stats.error_rate() == 1.0
    assert POLICY.current(stats.success_latencies()) == 1.0  # p95 0.2 x 1.5, clamped to min


def test_retry_budget_memory_is_bounded_by_its_window() -> None:
    clock = ManualClock()
    budget = RetryBudget(clock, window_s=10)
    for _ in range(10_000):
        budget.record_request()
        clock.advance(0.01)
    assert len(budget._requests) <= 1001  # 10 s of 100 requests/s, not the whole history


def test_sorted_latencies_follow_new_samples_and_the_window() -> None:
    clock = ManualClock()
    stats = ProviderStats(clock, max_samples=100, window_s=10)
    stats.record(0.3, ok=True)
    assert stats.success_latencies() == [0.3]
    stats.record(0.1, ok=True)
    assert stats.success_latencies() == [0.1, 0.3]
    clock.advance(11)
    stats.record(0.2, ok=True)
    assert stats.success_latencies() == [0.2]
