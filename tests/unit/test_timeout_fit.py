"""The adaptive timeout fits the request: calls are bounded by recent calls of their own size
class (max_tokens), a stream's opening by recent times to first text, and whole streams join
no latency window. Time moves on a manual clock."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.clock import ManualClock
from app.core.resilience.breaker import AsyncCircuitBreaker
from app.core.resilience.ratelimit import make_limiter
from app.core.settings import OpenAISettings, ProviderName, Settings
from app.core.telemetry import Telemetry
from app.modules.ai.domain import ChatMessage, CompletionRequest, Role
from app.modules.ai.errors import FailureKind, ProviderError
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.providers import KeyPool, build_adapter
from app.modules.ai.resilience.guard import GuardedProvider, GuardParts
from app.modules.ai.resilience.retry import BackoffPolicy, RetryBudget
from app.modules.ai.resilience.timeout import TimeoutPolicy
from app.modules.ai.stats import (
    LARGEST_CLASS,
    UNBOUNDED,
    LatencyWindow,
    ProviderStats,
    class_ceiling,
    size_class,
)

# The production defaults: OpenAI's configured 15 s, clamped to [1, 20], 20 samples.
POLICY = TimeoutPolicy(default_s=15.0, min_s=1.0, max_s=20.0, multiplier=1.5, min_samples=20)


def _request(max_tokens: int | None) -> CompletionRequest:
    return CompletionRequest(
        messages=(ChatMessage(Role.USER, "Summarise the abstract."),), max_tokens=max_tokens
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def guard(clock: ManualClock) -> AsyncIterator[GuardedProvider]:
    """A real guard over a real adapter; nothing here sends a request (127.0.0.1:9 is the
    discard port, never reached): only the guard's timeouts are read."""
    settings = Settings(
        openai=OpenAISettings(api_key="sk-unit-test-key", base_url="http://127.0.0.1:9/v1")
    )
    section = settings.openai
    parts = GuardParts(
        breaker=AsyncCircuitBreaker("openai", clock, fail_max=5, reset_timeout_s=30),
        timeout=POLICY,
        backoff=BackoffPolicy(),
        retry_budget=RetryBudget(clock),
        key_limiters=(make_limiter(clock, rpm=None, tpm=None),),
        stats=ProviderStats(clock, max_samples=200, window_s=300),
    )
    provider = GuardedProvider(
        build_adapter(ProviderName.OPENAI, settings),
        KeyPool(section.all_keys(), clock),
        section,
        parts,
        clock=clock,
        rng=random.Random(7),
        metrics=AIMetrics(Telemetry(), frozenset()),
    )
    yield provider
    await provider.adapter.aclose()


def test_size_classes_double_and_keep_unbounded_apart() -> None:
    assert [size_class(b) for b in (1, 8, 9, 16, 17, 256, 257)] == [0, 0, 1, 1, 2, 5, 6]
    assert size_class(None) == UNBOUNDED
    assert size_class(10**9) == LARGEST_CLASS
    assert class_ceiling(size_class(150)) == 256


async def test_forty_short_calls_do_not_bound_a_long_one(
    guard: GuardedProvider, clock: ManualClock
) -> None:
    """The incident: 40 calls asking for 5 tokens answered in 50 ms pulled the one timeout to
    its 1 s floor, and a call asking for 150 tokens (1.5 s upstream) was cut."""
    for _ in range(40):
        guard.stats.record(0.05, ok=True)
        guard.stats.record_sized(0.05, 5)
        clock.advance(0.1)
    assert guard.call_timeout_s(_request(5)) == 1.0  # its own class learned: the floor
    long_call = guard.call_timeout_s(_request(150))
    assert long_call == 15.0  # nothing learned for its class: the configured timeout
    assert long_call > 1.5
    assert guard.call_timeout_s(_request(None)) == 15.0  # no max_tokens: its own class too
    # The gauge shows the tightest bound in force.
    assert guard.timeout_s() == 1.0


async def test_a_class_learns_its_own_latency(guard: GuardedProvider) -> None:
    for _ in range(20):
        guard.stats.record_sized(1.5, 150)
    # p95 of 1.5 s stretched to the class's top (256 tokens): 1.5 x 256/150 = 2.56 s; x 1.5.
    assert guard.call_timeout_s(_request(150)) == pytest.approx(1.5 * 256 / 150 * 1.5)
    assert guard.call_timeout_s(_request(200)) == pytest.approx(1.5 * 256 / 150 * 1.5)
    # A smaller class is not bounded by it either way: it learns its own.
    assert guard.call_timeout_s(_request(100)) == 15.0


async def test_stream_durations_stay_out_of_the_call_windows(
    guard: GuardedProvider, clock: ManualClock
) -> None:
    for _ in range(20):
        guard.stats.record_sized(0.2, None)
        guard.stats.record(0.2, ok=True)
    before = guard.call_timeout_s(_request(None))
    assert before == 1.0
    for _ in range(50):  # long streams end, some with a fault after their first text
        guard.finish_stream("gpt-4o-mini", 30.0, None)
        guard.finish_stream(
            "gpt-4o-mini", 12.0, ProviderError(FailureKind.CONNECTION, "reset mid-stream")
        )
        clock.advance(0.1)
    assert guard.call_timeout_s(_request(None)) == before
    assert guard.stats.success_latencies() == [0.2] * 20  # routing's latency too
    assert guard.call_timeout_s(_request(None), stream=True) == 15.0  # no first text yet
    assert guard.stats.error_rate() == pytest.approx(50 / 120)  # still outcomes


async def test_a_stream_opening_is_bounded_by_times_to_first_text(
    guard: GuardedProvider,
) -> None:
    for _ in range(20):
        guard.stats.record_first_text(0.9)
    assert guard.call_timeout_s(_request(4000), stream=True) == pytest.approx(0.9 * 1.5)
    assert guard.call_timeout_s(_request(4000)) == 15.0


async def test_a_window_forgets_on_the_clock(guard: GuardedProvider, clock: ManualClock) -> None:
    for _ in range(20):
        guard.stats.record_sized(0.1, 64)
    assert guard.call_timeout_s(_request(64)) == 1.0
    clock.advance(301)  # older than the 300 s window
    assert guard.call_timeout_s(_request(64)) == 15.0
    assert guard.timeout_s() == 15.0


@given(
    small=st.integers(min_value=1, max_value=100_000),
    extra=st.integers(min_value=1, max_value=100_000),
    latencies=st.lists(st.floats(min_value=0.001, max_value=60.0), min_size=20, max_size=60),
)
def test_short_requests_never_bound_longer_ones(
    small: int, extra: int, latencies: list[float]
) -> None:
    """Whatever smaller calls taught, a call of a larger class keeps its own bound (the
    default here); a call of the same class is never bounded under its own latencies."""
    large = small + extra
    stats = ProviderStats(ManualClock(), max_samples=200, window_s=300)
    for latency in latencies:
        stats.record_sized(latency, small)
    if size_class(large) != size_class(small):
        assert POLICY.current(stats.sized_latencies(large)) == POLICY.current([])
    learned = stats.sized_latencies(small)
    assert min(learned) >= min(latencies)  # stretched, never shrunk
    assert POLICY.current(learned) >= min(POLICY.max_s, sorted(latencies)[18] * 1.5)


@given(
    steps=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=5.0), st.floats(min_value=0.0, max_value=3.0)),
        max_size=120,
    ),
    max_samples=st.integers(min_value=1, max_value=20),
)
def test_the_sorted_window_is_the_window_sorted(
    steps: list[tuple[float, float]], max_samples: int
) -> None:
    """Kept sorted in place (a bisect per sample in and out), the window always equals the
    plain definition: the last `max_samples` latencies none older than `window_s`, sorted."""
    clock = ManualClock()
    window = LatencyWindow(clock, max_samples=max_samples, window_s=10.0)
    added: list[tuple[float, float]] = []
    for latency, pause in steps:
        window.add(latency)
        added.append((clock.monotonic(), latency))
        clock.advance(pause)
        cutoff = clock.monotonic() - 10.0
        expected = sorted(v for at, v in added[-max_samples:] if at >= cutoff)
        assert window.sorted() == expected
