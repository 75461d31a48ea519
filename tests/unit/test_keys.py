from __future__ import annotations

from pydantic import SecretStr

from app.core.clock import ManualClock
from app.modules.ai.providers import KeyPool


def _pool(clock: ManualClock, n: int = 3) -> KeyPool:
    return KeyPool([SecretStr(f"key-number-{i:04d}") for i in range(n)], clock)


def test_round_robin() -> None:
    pool = _pool(ManualClock())
    picked = [pool.acquire() for _ in range(6)]
    assert [k.index for k in picked if k] == [0, 1, 2, 0, 1, 2]


def test_rested_key_is_skipped_until_its_retry_after() -> None:
    clock = ManualClock()
    pool = _pool(clock, 2)
    first = pool.acquire()
    assert first is not None
    pool.rest(first, 30)
    assert [pool.acquire().index for _ in range(3)] == [1, 1, 1]  # type: ignore[union-attr]
    assert pool.available() == 1
    clock.advance(30)
    assert {pool.acquire().index for _ in range(2)} == {0, 1}  # type: ignore[union-attr]


def test_all_resting_reports_when_the_first_wakes() -> None:
    clock = ManualClock()
    pool = _pool(clock, 2)
    a, b = pool.acquire(), pool.acquire()
    assert a
    assert b
    pool.rest(a, 20)
    pool.rest(b, 5)
    assert pool.acquire() is None
    assert pool.wake_in() == 5
    clock.advance(5)
    assert pool.acquire() is b


def test_retired_key_never_comes_back() -> None:
    clock = ManualClock()
    pool = _pool(clock, 1)
    key = pool.acquire()
    assert key
    pool.retire(key)
    clock.advance(10_000)
    assert pool.acquire() is None
    assert pool.wake_in() is None
    assert pool.usable() == 0


def test_key_repr_never_shows_the_secret() -> None:
    pool = _pool(ManualClock(), 1)
    key = pool.acquire()
    assert "key-number-0000" not in repr(key)
    assert "key-number-0000" not in key.label  # type: ignore[union-attr]
