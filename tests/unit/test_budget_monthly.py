"""Monthly caps beside the daily budgets, in the in-process store: the same reservation and
alert rules, the month in BUDGET_TIMEZONE, a block that waits for the first of the month."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from app.core.clock import ManualClock
from app.core.settings import ProviderName, Settings
from app.core.telemetry import Telemetry
from app.modules.ai.budget import DAY, HELD_RETRY_AFTER_S, MONTH, Blocked, BudgetGuard, Reservation
from app.modules.ai.metrics import AIMetrics

OA = ProviderName.OPENAI
DEFAULTS = {"azure", "gemini", "groq"}  # daily budgets every gateway has unless unset


def _guard(clock: ManualClock, **settings: object) -> tuple[BudgetGuard, Telemetry]:
    telemetry = Telemetry()
    values: dict[str, object] = {"gateway_api_keys": {"alice": "k" * 12, "bob": "j" * 12}}
    values.update(settings)
    guard = BudgetGuard(Settings(**values), clock, AIMetrics(telemetry, frozenset()))  # type: ignore[arg-type]
    return guard, telemetry


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not exported")


def _spend(guard: BudgetGuard, amount: float, caller: str = "alice") -> None:
    held = guard.reserve(OA, caller, amount)
    assert isinstance(held, Reservation)
    guard.settle(held, amount)


def test_a_spent_month_waits_for_the_first_in_the_budget_time_zone() -> None:
    # 21:30 UTC on 31 March is 23:30 in Berlin (summer time since the 29th).
    clock = ManualClock(wall=datetime(2026, 3, 31, 21, 30, tzinfo=UTC))
    guard, _ = _guard(
        clock,
        daily_budget_usd_openai=100.0,
        monthly_budget_usd_openai=1.0,
        budget_timezone="Europe/Berlin",
    )
    _spend(guard, 0.9)
    blocked = guard.reserve(OA, "alice", 0.2)
    assert blocked == Blocked("openai", pytest.approx(1800), period=MONTH)
    clock.advance(1800)  # April in Berlin
    assert isinstance(guard.reserve(OA, "alice", 0.2), Reservation)
    assert guard.spent("openai", MONTH) == 0


def test_the_day_resets_but_the_month_keeps_counting() -> None:
    clock = ManualClock(wall=datetime(2026, 3, 10, 12, tzinfo=UTC))
    guard, _ = _guard(clock, daily_budget_usd_openai=1.0, monthly_budget_usd_openai=1.5)
    _spend(guard, 0.8)
    clock.advance(86400)
    assert guard.spent("openai") == 0
    assert guard.spent("openai", MONTH) == Decimal("0.8")
    blocked = guard.reserve(OA, "alice", 0.8)  # fits today's budget, not the month's
    assert isinstance(blocked, Blocked)
    assert (blocked.period, blocked.held) == (MONTH, False)


def test_a_month_truly_spent_wins_over_a_day_held_or_spent() -> None:
    clock = ManualClock(wall=datetime(2026, 3, 10, 12, tzinfo=UTC))
    guard, _ = _guard(clock, daily_budget_usd_openai=1.0, monthly_budget_usd_total=1.0)
    _spend(guard, 0.7)
    blocked = guard.reserve(OA, "alice", 0.5)  # both truly spent: the longer wait is told
    assert isinstance(blocked, Blocked)
    assert (blocked.budget, blocked.period) == ("total", MONTH)
    assert blocked.retry_after_s == pytest.approx(21 * 86400 + 12 * 3600)


def test_held_by_calls_in_flight_on_a_monthly_cap_is_a_short_wait() -> None:
    clock = ManualClock(wall=datetime(2026, 3, 10, 12, tzinfo=UTC))
    guard, _ = _guard(clock, monthly_budget_usd_per_caller=1.0)
    first = guard.reserve(OA, "alice", 0.6)
    assert isinstance(first, Reservation)
    assert first.month_budgets == ("caller:alice",)
    blocked = guard.reserve(OA, "alice", 0.6)
    assert blocked == Blocked("caller:alice", HELD_RETRY_AFTER_S, held=True, period=MONTH)
    assert isinstance(guard.reserve(OA, "bob", 0.6), Reservation)  # bob's own cap
    guard.settle(first, 0.1)
    assert isinstance(guard.reserve(OA, "alice", 0.6), Reservation)


def test_monthly_alerts_once_per_level_and_month_beside_the_daily_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(wall=datetime(2026, 3, 10, 12, tzinfo=UTC))
    guard, telemetry = _guard(clock, daily_budget_usd_openai=1.0, monthly_budget_usd_openai=2.0)
    caplog.set_level(logging.WARNING, logger="app.ai.budget")
    for cost in (0.85, 0.15):  # today 85 %, 100 %; the month 42.5 %, 50 %
        _spend(guard, cost)
    clock.advance(86400)
    for cost in (0.7, 0.1, 0.2):  # the month 85 %, 90 %, 100 %
        _spend(guard, cost)
    assert isinstance(guard.reserve(OA, "alice", 0.0001), Blocked)  # the month is spent
    alerts = [r.getMessage() for r in caplog.records if "budget alert" in r.getMessage()]
    daily = [a.split("level=")[1].split("%")[0] for a in alerts if "period=day" in a]
    monthly = [a.split("level=")[1].split("%")[0] for a in alerts if "period=month" in a]
    assert daily == ["80", "90", "100", "80", "90", "100"]  # two days, each its own
    assert monthly == ["80", "90", "100"]
    text = telemetry.render(None)[0].decode()
    alerts_100 = {"budget": "openai", "level": "100"}
    # The daily series keep their labels (period="" is no label to Prometheus).
    assert _sample(text, "ai_budget_alerts_total", **alerts_100, period="") == 2.0
    assert _sample(text, "ai_budget_alerts_total", **alerts_100, period="month") == 1.0
    assert _sample(text, "ai_budget_monthly_spent_usd", budget="openai") == 2.0
    assert _sample(text, "ai_budget_monthly_limit_usd", budget="openai") == 2.0
    assert _sample(text, "ai_budget_spent_usd", budget="openai") == 1.0


def test_restore_and_snapshot_carry_both_periods() -> None:
    clock = ManualClock(wall=datetime(2026, 3, 10, 12, tzinfo=UTC))
    guard, _ = _guard(
        clock,
        daily_budget_usd_openai=1.0,
        monthly_budget_usd_openai=5.0,
        monthly_budget_usd_per_caller=3.0,
    )
    guard.restore({"openai": 0.25}, {"openai": 4.5, "caller:alice": 1.0})
    assert isinstance(guard.reserve(OA, "alice", 0.6), Blocked)  # 4.5 + 0.6 > 5
    lines = [x for x in guard.snapshot(caller="alice") if x["budget"] not in DEFAULTS]
    assert [(x["budget"], x["period"]) for x in lines] == [
        ("openai", DAY),
        ("caller:alice", MONTH),
        ("openai", MONTH),
    ]
    assert "caller:bob" not in {x["budget"] for x in guard.snapshot(caller="alice")}
    month = lines[2]
    assert (month["spent_usd"], month["remaining_usd"], month["month"]) == (4.5, 0.5, "2026-03")
    assert month["resets_in_s"] == 21 * 86400 + 12 * 3600


@given(
    costs=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=30),
    days=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=30),
)
def test_a_month_never_spends_past_its_cap_across_days(costs: list[int], days: list[int]) -> None:
    """Whatever is asked on whichever days, what a month books never passes its cap while
    each day's is kept apart."""
    clock = ManualClock(wall=datetime(2026, 3, 1, 12, tzinfo=UTC))
    guard, _ = _guard(clock, daily_budget_usd_openai=0.5, monthly_budget_usd_openai=1.0)
    for cost, skip in zip(costs, days, strict=False):
        clock.advance(skip * 86400)
        held = guard.reserve(OA, "alice", cost / 1000)
        if isinstance(held, Reservation):
            guard.settle(held, cost / 1000)
        assert guard.spent("openai", MONTH) <= Decimal("1.0")
        assert guard.spent("openai") <= Decimal("0.5")
