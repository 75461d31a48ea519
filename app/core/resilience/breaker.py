"""A circuit breaker for asyncio built on pybreaker.

pybreaker keeps the state and tells listeners about changes; this adapter owns what
pybreaker gets wrong under asyncio (see STYLE.md, "pybreaker with asyncio"):

- admission: in half-open exactly one trial call is let through, the rest skip the provider;
- outcomes are reported after the await, never on coroutine creation, and only for provider
  faults: cancellations and the caller's own bad requests are released unreported;
- an outcome whose call was admitted in another state than the breaker is in now is dropped,
  so a late success from before a trip cannot close the breaker;
- the open period is timed on the injected monotonic clock, not pybreaker's wall clock;
- a free health probe may take the half-open trial (`admit_trial`), so an idle provider's
  breaker closes once the provider is back instead of waiting for a caller to try it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import pybreaker

from app.core.clock import Clock

log = logging.getLogger("app.breaker")


class BreakerState(IntEnum):
    """Values are the `ai_provider_circuit_breaker_state` gauge's."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


_STATES = {
    pybreaker.STATE_CLOSED: BreakerState.CLOSED,
    pybreaker.STATE_OPEN: BreakerState.OPEN,
    pybreaker.STATE_HALF_OPEN: BreakerState.HALF_OPEN,
}


@dataclass(frozen=True, slots=True)
class Ticket:
    """Proof of admission: the state the call was admitted in, and whether it is the trial."""

    state: BreakerState
    trial: bool = False
    generation: int = 0


StateChangeHook = Callable[[str, BreakerState, BreakerState], None]


class _Fault(Exception):
    """What we hand pybreaker to count one provider fault."""


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: AsyncCircuitBreaker) -> None:
        self._owner = owner

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        old = _STATES[old_state.name] if old_state is not None else BreakerState.CLOSED
        self._owner._changed(old, _STATES[new_state.name])


class AsyncCircuitBreaker:
    def __init__(
        self,
        name: str,
        clock: Clock,
        *,
        fail_max: int,
        reset_timeout_s: float,
        on_change: StateChangeHook | None = None,
    ) -> None:
        self.name = name
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._on_change = on_change
        self._opened_at = 0.0
        # When the breaker last closed (monotonic), or None: health discounts the failures
        # recorded before it, since the trial that closed it proved the provider recovered.
        self.closed_at: float | None = None
        self._trial_in_flight = False
        # Bumped on every transition, so outcomes from an earlier period are recognised.
        self._generation = 0
        self._cb = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            # Admission after the open period is ours (monotonic clock); pybreaker's own
            # wall-clock check must never move the state on its own.
            reset_timeout=10**9,
            name=name,
            listeners=[_Listener(self)],
            throw_new_error_on_trip=False,
        )
        self.transitions = 0

    @property
    def state(self) -> BreakerState:
        return _STATES[self._cb.current_state]

    def open_remaining_s(self) -> float:
        """Seconds until an open breaker admits its trial call (0 if not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout_s - self._clock.monotonic())

    def would_admit(self) -> bool:
        """Whether `admit` would let a call through now, without taking the trial slot."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return self.open_remaining_s() <= 0
        return not self._trial_in_flight

    def admit(self) -> Ticket | None:
        """A ticket to call the provider, or None to skip it now."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Ticket(state, generation=self._generation)
        if state is BreakerState.OPEN:
            if self.open_remaining_s() > 0:
                return None
            self._cb.half_open()
            state = BreakerState.HALF_OPEN
        if self._trial_in_flight:
            return None
        self._trial_in_flight = True
        return Ticket(state, trial=True, generation=self._generation)

    def admit_trial(self) -> Ticket | None:
        """The half-open trial for a free health probe, taken through `admit`, or None.

        None while closed (a probe then tells the breaker nothing: the model list can be up
        while completions fail, and the consecutive count belongs to real calls), inside the
        open period, or while another trial is out. Without this an idle provider's breaker
        never leaves open: only a call can move it. The probe reports its outcome like any
        trial: `success` closes the breaker, `failure` re-opens it for a fresh period,
        `release` (no verdict) frees the slot.
        """
        if self.state is BreakerState.CLOSED:
            return None
        return self.admit()

    def success(self, ticket: Ticket) -> None:
        if not self._settle(ticket):
            return
        # In closed this resets the consecutive-failure count; in half-open it closes.
        self._cb.call(_noop)

    def failure(self, ticket: Ticket) -> None:
        if not self._settle(ticket):
            return
        with contextlib.suppress(_Fault):
            self._cb.call(_raise_fault)

    def release(self, ticket: Ticket) -> None:
        """The call ended without a verdict on the provider (cancelled, or the caller's fault)."""
        if ticket.trial and ticket.generation == self._generation:
            self._trial_in_flight = False

    def _settle(self, ticket: Ticket) -> bool:
        """Free the trial slot; say whether this outcome still describes the current period."""
        current = ticket.generation == self._generation
        if ticket.trial and current:
            self._trial_in_flight = False
        return current and ticket.state is self.state

    def _changed(self, old: BreakerState, new: BreakerState) -> None:
        if old is new:
            return
        self._generation += 1
        self.transitions += 1
        self._trial_in_flight = False
        if new is BreakerState.OPEN:
            self._opened_at = self._clock.monotonic()
        elif new is BreakerState.CLOSED:
            self.closed_at = self._clock.monotonic()
        log.warning(
            "circuit breaker state change breaker=%s from=%s to=%s",
            self.name,
            old.name.lower(),
            new.name.lower(),
        )
        if self._on_change is not None:
            self._on_change(self.name, old, new)


def _noop() -> None:
    return None


def _raise_fault() -> None:
    raise _Fault
