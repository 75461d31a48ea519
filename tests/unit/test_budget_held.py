"""Budget blocks say why and when: truly spent (until the day's reset) or only held by calls
still in flight (a short Retry-After)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.clock import ManualClock
from app.core.settings import ProviderName, Settings
from app.core.telemetry import Telemetry
from app.modules.ai.budget import HELD_RETRY_AFTER_S, Blocked, BudgetGuard, Reservation
from app.modules.ai.metrics import AIMetrics

OA = ProviderName.OPENAI
# 23:00 UTC: the day resets in an hour.
LATE = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)


def _guard(**settings: object) -> BudgetGuard:
    values: dict[str, object] = {"gateway_api_keys": {"alice": "k" * 12, "bob": "j" * 12}}
    values.update(settings)
    metrics = AIMetrics(Telemetry(), frozenset())
    return BudgetGuard(Settings(**values), ManualClock(wall=LATE), metrics)  # type: ignore[arg-type]


def test_held_by_calls_in_flight_is_a_short_wait() -> None:
    guard = _guard(daily_budget_usd_openai=1.0)
    first = guard.reserve(OA, "alice", 0.6)
    assert isinstance(first, Reservation)
    blocked = guard.reserve(OA, "alice", 0.6)
    assert isinstance(blocked, Blocked)
    assert (blocked.budget, blocked.held, blocked.retry_after_s) == (
        "openai",
        True,
        HELD_RETRY_AFTER_S,
    )
    guard.settle(first, 0.01)  # the call ended: its worst case is released
    assert isinstance(guard.reserve(OA, "alice", 0.6), Reservation)


def test_truly_spent_waits_for_the_reset() -> None:
    guard = _guard(daily_budget_usd_openai=1.0)
    spent = guard.reserve(OA, "alice", 0.5)
    assert isinstance(spent, Reservation)
    guard.settle(spent, 0.5)
    blocked = guard.reserve(OA, "alice", 0.6)
    assert isinstance(blocked, Blocked)
    assert (blocked.held, blocked.retry_after_s) == (False, pytest.approx(3600))


def test_a_spent_budget_wins_over_a_held_one() -> None:
    """Held on the provider's budget, truly spent on the caller's: the true wait is told."""
    guard = _guard(daily_budget_usd_openai=1.0, daily_budget_usd_per_caller=0.5)
    bob = guard.reserve(OA, "bob", 0.45)
    assert isinstance(bob, Reservation)
    alice = guard.reserve(OA, "alice", 0.5)
    assert isinstance(alice, Reservation)
    guard.settle(alice, 0.4)
    blocked = guard.reserve(OA, "alice", 0.2)  # openai: 0.4 + 0.45 held + 0.2 > 1
    assert isinstance(blocked, Blocked)
    assert (blocked.budget, blocked.held) == ("caller:alice", False)
    assert blocked.retry_after_s == pytest.approx(3600)


def test_a_short_wait_never_passes_the_reset() -> None:
    guard = BudgetGuard(
        Settings(daily_budget_usd_openai=1.0),
        ManualClock(wall=datetime(2026, 3, 1, 23, 59, 59, 500_000, tzinfo=UTC)),
        AIMetrics(Telemetry(), frozenset()),
    )
    assert isinstance(guard.reserve(OA, "alice", 0.6), Reservation)
    blocked = guard.reserve(OA, "alice", 0.6)
    assert isinstance(blocked, Blocked)
    assert blocked.held
    assert blocked.retry_after_s == pytest.approx(1.0)  # reset in 0.5 s; never under 1 s


@given(
    spent=st.decimals(0, 1, places=6),
    held=st.decimals(0, 1, places=6),
    ask=st.decimals("0.000001", 1, places=6),
)
def test_held_exactly_when_spent_leaves_room(spent: object, held: object, ask: object) -> None:
    """Any mix of spent and in-flight money: blocked iff spent + held + ask passes the
    limit, and `held` iff spent + ask alone would not."""
    limit = 1.0
    guard = _guard(daily_budget_usd_openai=limit)
    s, h, a = float(spent), float(held), float(ask)  # type: ignore[arg-type]
    if s:
        paid = guard.reserve(OA, "alice", s)
        assert isinstance(paid, Reservation)
        guard.settle(paid, s)
    if h and s + h <= limit:
        assert isinstance(guard.reserve(OA, "alice", h), Reservation)
    else:
        h = 0.0
    outcome = guard.reserve(OA, "alice", a)
    if s + h + a <= limit + 1e-12:
        assert isinstance(outcome, Reservation)
    else:
        assert isinstance(outcome, Blocked)
        assert outcome.held == (s + a <= limit + 1e-12)
        assert outcome.retry_after_s == (HELD_RETRY_AFTER_S if outcome.held else 3600)
