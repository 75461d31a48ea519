"""The pieces behind truthful health, without I/O: the breaker's probe trial, key states and
their re-check schedule, and the ledger's readiness accessor."""

from __future__ import annotations

import hashlib
import string

from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from app.core.clock import ManualClock
from app.core.db import make_engine
from app.core.resilience.breaker import AsyncCircuitBreaker, BreakerState
from app.core.settings import Settings
from app.core.telemetry import Telemetry
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.providers import KeyPool
from app.modules.ai.providers.keys import KeyState, key_id
from app.modules.ai.usage import UsageLedger
from tests.support.sandbox import fresh_database_url

RESET_S = 30.0


def _tripped(clock: ManualClock) -> AsyncCircuitBreaker:
    breaker = AsyncCircuitBreaker("groq", clock, fail_max=2, reset_timeout_s=RESET_S)
    for _ in range(2):
        ticket = breaker.admit()
        assert ticket is not None
        breaker.failure(ticket)
    assert breaker.state is BreakerState.OPEN
    return breaker


def test_probe_trial_only_once_the_open_period_is_over() -> None:
    clock = ManualClock()
    closed = AsyncCircuitBreaker("groq", clock, fail_max=2, reset_timeout_s=RESET_S)
    assert closed.admit_trial() is None  # a closed breaker takes no verdict from a probe
    breaker = _tripped(clock)
    clock.advance(RESET_S - 0.5)
    assert breaker.admit_trial() is None
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.5)
    trial = breaker.admit_trial()
    assert trial is not None
    assert trial.trial
    assert breaker.state is BreakerState.HALF_OPEN
    # The probe holds the one trial slot: neither a caller nor another probe gets in.
    assert breaker.admit() is None
    assert breaker.admit_trial() is None


def test_probe_trial_success_closes_and_marks_when() -> None:
    clock = ManualClock()
    breaker = _tripped(clock)
    assert breaker.closed_at is None
    clock.advance(RESET_S)
    trial = breaker.admit_trial()
    assert trial is not None
    breaker.success(trial)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.closed_at == clock.monotonic()


def test_probe_trial_failure_reopens_for_a_fresh_period() -> None:
    clock = ManualClock()
    breaker = _tripped(clock)
    clock.advance(RESET_S)
    trial = breaker.admit_trial()
    assert trial is not None
    breaker.failure(trial)
    assert breaker.state is BreakerState.OPEN
    assert breaker.open_remaining_s() == RESET_S
    assert breaker.closed_at is None


def test_released_probe_trial_leaves_the_slot_to_a_caller() -> None:
    clock = ManualClock()
    breaker = _tripped(clock)
    clock.advance(RESET_S)
    trial = breaker.admit_trial()
    assert trial is not None
    breaker.release(trial)  # the probe's answer said nothing about the provider (a 401)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.admit() is not None


def _pool(clock: ManualClock, n: int = 3) -> KeyPool:
    return KeyPool([SecretStr(f"key-number-{i:04d}") for i in range(n)], clock)


def test_key_states_follow_rest_retire_restore() -> None:
    clock = ManualClock()
    pool = _pool(clock, 2)
    first, second = list(pool)
    assert [pool.state(k) for k in pool] == [KeyState.ACTIVE, KeyState.ACTIVE]
    pool.rest(first, 10)
    pool.retire(second)
    assert pool.state(first) is KeyState.RESTING
    assert pool.state(second) is KeyState.RETIRED
    assert second.retired_at == clock.now()
    clock.advance(10)
    assert pool.state(first) is KeyState.ACTIVE
    pool.restore(second)
    assert pool.state(second) is KeyState.ACTIVE
    assert second.retired_at is None
    assert {pool.acquire().index for _ in range(2)} == {0, 1}  # type: ignore[union-attr]


def test_a_retired_key_is_rechecked_once_per_interval() -> None:
    clock = ManualClock()
    pool = _pool(clock)
    key = pool.acquire()
    assert key is not None
    pool.retire(key)
    assert pool.due_for_recheck(30) == []  # just refused: not asked again at once
    clock.advance(30)
    assert pool.due_for_recheck(30) == [key]
    assert pool.due_for_recheck(30) == []  # checked now: the next one an interval later
    clock.advance(29.5)
    assert pool.due_for_recheck(30) == []
    clock.advance(0.5)
    assert pool.due_for_recheck(30) == [key]
    pool.restore(key)
    clock.advance(60)
    assert pool.due_for_recheck(30) == []  # only retired keys are re-checked


def test_retiring_twice_keeps_the_first_refusal_time() -> None:
    clock = ManualClock()
    pool = _pool(clock, 1)
    key = pool.acquire()
    assert key is not None
    pool.retire(key)
    first = key.retired_at
    clock.advance(5)
    pool.retire(key)  # e.g. a probe and a call both met the refusal
    assert key.retired_at == first


@given(st.text(min_size=1, max_size=200))
def test_key_id_is_a_short_hash_never_the_key(secret: str) -> None:
    """Any key (any Unicode) gets an 8 hex digit id of its SHA-256: bounded and safe as a
    metric label, the same across restarts and replicas, and not the key."""
    ident = key_id(secret)
    assert len(ident) == 8
    assert set(ident) <= set(string.hexdigits.lower())
    assert ident == hashlib.sha256(secret.encode()).hexdigest()[:8]
    pool = KeyPool([SecretStr(secret)], ManualClock())
    assert [k.id for k in pool] == [ident]


async def test_ledger_status_says_whether_its_writer_runs() -> None:
    url = fresh_database_url()
    settings = Settings(database_url=url, ledger_buffer_max_rows=7)
    engine = make_engine(url)
    ledger = UsageLedger(engine, settings, ManualClock(), AIMetrics(Telemetry(), frozenset()))
    try:
        before = ledger.status()
        assert (before.writer_alive, before.buffered_rows, before.max_rows) == (False, 0, 7)
        ledger.start()
        assert ledger.status().writer_alive
        await ledger.close()
        assert not ledger.status().writer_alive  # stopping: take this replica out
    finally:
        await engine.dispose()
