"""The per-key daily request quota in this process (<P>_RPD_PER_KEY): the day is
BUDGET_TIMEZONE's, a day with a daylight-saving change has its true length, a refusal by
another limit takes nothing from the day, and no day ever grants more than the quota."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.clock import ManualClock
from app.core.resilience.ratelimit import DailyQuota, Day, RateLimiter, day_of, make_limiter

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def test_a_key_at_its_quota_waits_until_midnight_in_the_budget_timezone() -> None:
    # 03:00 UTC on 10 March is 23:00 on 9 March in New York (EDT, UTC-4).
    clock = ManualClock(wall=datetime(2026, 3, 10, 3, 0, tzinfo=UTC))
    limiter = make_limiter(clock, rpm=None, tpm=None, rpd=2, tz=NEW_YORK)
    assert [limiter.try_acquire(10), limiter.try_acquire(10)] == [0.0, 0.0]
    assert limiter.try_acquire(10) == pytest.approx(3600)
    assert limiter.quota_usage() == (2.0, 2.0)
    clock.advance(3599)
    assert limiter.try_acquire(10) == pytest.approx(1)
    clock.advance(1)  # midnight in New York, not in UTC
    assert limiter.try_acquire(10) == 0.0
    assert limiter.quota_usage() == (1.0, 2.0)


def test_a_day_with_a_daylight_saving_change_has_its_true_length() -> None:
    # Berlin moves to summer time on 29 March 2026: that day has 23 hours.
    clock = ManualClock(wall=datetime(2026, 3, 28, 23, 0, tzinfo=UTC))  # 00:00 in Berlin
    assert _day(day_of(clock, BERLIN)) == ("2026-03-29", 23 * 3600)
    clock = ManualClock(wall=datetime(2026, 10, 24, 22, 0, tzinfo=UTC))  # 00:00, 25 October
    assert _day(day_of(clock, BERLIN)) == ("2026-10-25", 25 * 3600)


def _day(day: tuple[str, float]) -> tuple[str, int]:
    return day[0], round(day[1])


def test_the_day_is_computed_once_and_then_read_from_the_monotonic_clock() -> None:
    clock = ManualClock(wall=datetime(2026, 1, 1, 23, 0, tzinfo=UTC))
    day = Day(clock, UTC)
    assert _day(day.current()) == ("2026-01-01", 3600)
    clock.advance(1800)
    assert _day(day.current()) == ("2026-01-01", 1800)
    clock.advance(1800)
    assert _day(day.current()) == ("2026-01-02", 86400)


def test_a_refusal_by_the_minute_takes_nothing_from_the_day() -> None:
    clock = ManualClock()
    limiter = make_limiter(clock, rpm=1, tpm=None, rpd=5)
    assert limiter.try_acquire(0) == 0
    assert limiter.try_acquire(0) == pytest.approx(60)
    assert limiter.quota_usage() == (1.0, 5.0)


def test_a_share_of_a_quota_starts_from_what_was_seen_today() -> None:
    """What a replica cut off from Redis gets: a fraction of the quota and of the count."""
    clock = ManualClock()
    today = day_of(clock, UTC)[0]
    quota = DailyQuota(10 / 3, clock, UTC, used=4 / 3, day=today)
    limiter = RateLimiter(clock, rpm=None, tpm=None, quota=quota)
    assert sum(limiter.try_acquire(0) == 0 for _ in range(5)) == 2  # (10 - 4) / 3
    stale = DailyQuota(10 / 3, clock, UTC, used=3.0, day="2025-12-31")
    assert stale.usage() == (0.0, 10 / 3)  # a count of another day says nothing


async def test_the_in_process_limiter_does_no_io_when_awaited() -> None:
    limiter = make_limiter(ManualClock(), rpm=2, tpm=None, rpd=3)
    assert [await limiter.acquire(0) for _ in range(2)] == [0.0, 0.0]
    assert await limiter.acquire(0) == pytest.approx(30)


@given(
    rpd=st.integers(min_value=1, max_value=20),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=20_000), st.integers(0, 500)), max_size=200
    ),
)
def test_no_calendar_day_ever_grants_more_than_the_quota(
    rpd: int, steps: list[tuple[float, int]]
) -> None:
    clock = ManualClock(wall=datetime(2026, 3, 28, 20, 0, tzinfo=UTC))
    limiter = make_limiter(clock, rpm=30, tpm=5000, rpd=rpd, tz=BERLIN)
    granted: dict[str, int] = {}
    for advance, tokens in steps:
        clock.advance(advance)
        if limiter.try_acquire(tokens) == 0:
            day = clock.now().astimezone(BERLIN).date().isoformat()
            granted[day] = granted.get(day, 0) + 1
    assert all(count <= rpd for count in granted.values())
