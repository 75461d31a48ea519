from __future__ import annotations

from app.core.clock import ManualClock
from app.core.resilience.breaker import AsyncCircuitBreaker, BreakerState


def _breaker(
    clock: ManualClock, changes: list[tuple[BreakerState, BreakerState]] | None = None
) -> AsyncCircuitBreaker:
    def record(_: str, old: BreakerState, new: BreakerState, origin: str) -> None:
        assert origin == "local"  # no fleet here
        if changes is not None:
            changes.append((old, new))

    return AsyncCircuitBreaker("groq", clock, fail_max=3, reset_timeout_s=30, on_change=record)


def _fail(breaker: AsyncCircuitBreaker, times: int) -> None:
    for _ in range(times):
        ticket = breaker.admit()
        assert ticket is not None
        breaker.failure(ticket)


def test_opens_after_fail_max_consecutive_faults() -> None:
    clock = ManualClock()
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = _breaker(clock, changes)
    _fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    _fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert changes == [(BreakerState.CLOSED, BreakerState.OPEN)]
    assert breaker.admit() is None
    assert breaker.open_remaining_s() == 30


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = _breaker(ManualClock())
    _fail(breaker, 2)
    ticket = breaker.admit()
    assert ticket is not None
    breaker.success(ticket)
    _fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED


def test_open_until_reset_timeout_on_the_injected_clock() -> None:
    clock = ManualClock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.advance(29.9)
    assert breaker.admit() is None
    assert not breaker.would_admit()
    clock.advance(0.1)
    assert breaker.would_admit()
    assert breaker.admit() is not None
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_admits_exactly_one_trial() -> None:
    clock = ManualClock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.advance(30)
    tickets = [breaker.admit() for _ in range(50)]
    admitted = [t for t in tickets if t is not None]
    assert len(admitted) == 1
    assert admitted[0].trial


def test_trial_success_closes_and_failure_reopens() -> None:
    clock = ManualClock()
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = _breaker(clock, changes)
    _fail(breaker, 3)
    clock.advance(30)
    trial = breaker.admit()
    assert trial is not None
    breaker.failure(trial)
    assert breaker.state is BreakerState.OPEN
    assert breaker.open_remaining_s() == 30  # a fresh open period from the failed trial
    clock.advance(30)
    trial = breaker.admit()
    assert trial is not None
    breaker.success(trial)
    assert breaker.state is BreakerState.CLOSED
    assert changes == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]
    assert breaker.transitions == 5


def test_released_trial_frees_the_slot_without_a_verdict() -> None:
    clock = ManualClock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.advance(30)
    trial = breaker.admit()
    assert trial is not None
    breaker.release(trial)  # e.g. the caller went away mid-call
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.admit() is not None


def test_late_success_from_before_the_trip_does_not_close() -> None:
    clock = ManualClock()
    breaker = _breaker(clock)
    slow = breaker.admit()  # admitted while closed, answers late
    assert slow is not None
    _fail(breaker, 3)
    assert breaker.state is BreakerState.OPEN
    breaker.success(slow)
    assert breaker.state is BreakerState.OPEN
    clock.advance(30)
    trial = breaker.admit()
    assert trial is not None
    breaker.success(slow)  # still stale in half-open: the trial decides
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.success(trial)
    assert breaker.state is BreakerState.CLOSED


def test_late_failure_from_before_the_trip_does_not_extend_the_open_period() -> None:
    clock = ManualClock()
    breaker = _breaker(clock)
    slow = breaker.admit()
    assert slow is not None
    _fail(breaker, 3)
    clock.advance(10)
    breaker.failure(slow)
    assert breaker.open_remaining_s() == 20


def test_two_breakers_share_nothing() -> None:
    clock = ManualClock()
    first, second = _breaker(clock), _breaker(clock)
    _fail(first, 3)
    assert first.state is BreakerState.OPEN
    assert second.state is BreakerState.CLOSED
