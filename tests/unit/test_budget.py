from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app.core.clock import ManualClock
from app.core.settings import ProviderName, Settings
from app.core.telemetry import Telemetry
from app.modules.ai.budget import Blocked, BudgetGuard, Reservation
from app.modules.ai.metrics import AIMetrics

G, GE, OA = ProviderName.GROQ, ProviderName.GEMINI, ProviderName.OPENAI


def _guard(clock: ManualClock, **settings: object) -> tuple[BudgetGuard, Telemetry]:
    telemetry = Telemetry()
    values: dict[str, object] = {"gateway_api_keys": {"alice": "k" * 12, "bob": "j" * 12}}
    values.update(settings)
    guard = BudgetGuard(Settings(**values), clock, AIMetrics(telemetry, frozenset()))  # type: ignore[arg-type]
    return guard, telemetry


def test_reserve_then_settle_to_the_real_cost() -> None:
    guard, _ = _guard(ManualClock(), daily_budget_usd_gemini=1.0)
    held = guard.reserve(GE, "alice", 0.4)
    assert isinstance(held, Reservation)
    assert isinstance(guard.reserve(GE, "alice", 0.4), Reservation)
    # 0.8 held: a third worst case would pass the budget.
    assert isinstance(guard.reserve(GE, "alice", 0.4), Blocked)
    guard.settle(held, 0.05)
    assert guard.spent("gemini") == Decimal("0.05")
    assert isinstance(guard.reserve(GE, "alice", 0.4), Reservation)


def test_settling_twice_counts_once() -> None:
    guard, _ = _guard(ManualClock(), daily_budget_usd_gemini=1.0)
    held = guard.reserve(GE, "alice", 0.5)
    assert isinstance(held, Reservation)
    guard.settle(held, 0.1)
    guard.settle(held, 0.1)
    assert guard.spent("gemini") == Decimal("0.1")
    assert guard.spent("total") == 0  # no total budget configured


def test_free_calls_are_never_blocked_and_zero_blocks_paid() -> None:
    guard, _ = _guard(ManualClock(), daily_budget_usd_openai=0.0, daily_budget_usd_groq=0.0)
    assert isinstance(guard.reserve(G, "alice", 0.0), Reservation)
    blocked = guard.reserve(OA, "alice", 0.000001)
    assert isinstance(blocked, Blocked)
    assert blocked.budget == "openai"


def test_total_and_per_caller_budgets_apply_together() -> None:
    guard, _ = _guard(
        ManualClock(),
        daily_budget_usd_total=1.0,
        daily_budget_usd_per_caller=0.6,
        daily_budget_usd_openai=None,
        daily_budget_usd_gemini=None,
    )
    first = guard.reserve(OA, "alice", 0.5)
    assert isinstance(first, Reservation)
    assert set(first.budgets) == {"total", "caller:alice"}
    alice_again = guard.reserve(GE, "alice", 0.2)
    assert isinstance(alice_again, Blocked)
    assert alice_again.budget == "caller:alice"
    assert isinstance(guard.reserve(GE, "bob", 0.5), Reservation)
    total = guard.reserve(GE, "bob", 0.05)
    assert isinstance(total, Blocked)
    assert total.budget == "total"


def test_the_day_resets_at_midnight_in_the_budget_time_zone() -> None:
    clock = ManualClock(wall=datetime(2026, 3, 1, 22, 0, tzinfo=UTC))
    guard, _ = _guard(clock, daily_budget_usd_gemini=1.0, budget_timezone="Europe/Berlin")
    held = guard.reserve(GE, "alice", 1.0)
    assert isinstance(held, Reservation)
    guard.settle(held, 1.0)
    blocked = guard.reserve(GE, "alice", 0.01)
    assert isinstance(blocked, Blocked)
    # 22:00 UTC is 23:00 in Berlin: the budget resets in one hour.
    assert blocked.retry_after_s == pytest.approx(3600)
    clock.advance(3600)
    assert isinstance(guard.reserve(GE, "alice", 0.5), Reservation)
    assert guard.spent("gemini") == 0


def test_alerts_once_per_level_per_day(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    guard, telemetry = _guard(clock, daily_budget_usd_gemini=1.0)
    caplog.set_level(logging.WARNING, logger="app.ai.budget")
    for cost in (0.5, 0.35, 0.01, 0.04, 0.1):  # 50, 85, 86, 90, 100 %
        held = guard.reserve(GE, "alice", cost)
        assert isinstance(held, Reservation)
        guard.settle(held, cost)
    alerts = [r.getMessage() for r in caplog.records if "budget alert" in r.getMessage()]
    assert [a.split("level=")[1].split("%")[0] for a in alerts] == ["80", "90", "100"]
    text = telemetry.render(None)[0].decode()
    for level in ("80", "90", "100"):
        assert f'ai_budget_alerts_total{{budget="gemini",level="{level}"}} 1.0' in text
    assert 'ai_budget_spent_usd{budget="gemini"} 1.0' in text
    assert 'ai_budget_limit_usd{budget="gemini"} 1.0' in text


def test_restore_from_the_ledger_counts_against_the_budget() -> None:
    guard, _ = _guard(ManualClock(), daily_budget_usd_openai=1.0)
    guard.restore({"openai": 0.95, "total": 0.95})
    assert isinstance(guard.reserve(OA, "alice", 0.1), Blocked)
    assert isinstance(guard.reserve(OA, "alice", 0.05), Reservation)
