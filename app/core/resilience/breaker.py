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

Several processes (workers, replicas) share a breaker through an optional `SharedBreakerHook`
(`app.core.resilience.shared_breaker`): the local logic above is unchanged, the hook is told
about transitions made here, may withhold the half-open trial (one trial for the whole fleet,
held by a lease), and applies transitions made elsewhere with `apply_open`, `apply_closed` and
`apply_half_open`, which never report back to the hook. Closed-state admission never asks it:
the hot path stays in local memory.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

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


# (breaker name, old state, new state, origin): origin is "local" for a transition this
# process's breaker decided, "fleet" for one applied because another replica decided it. A
# count summed over replicas must take the local ones only, or one trip counts once per replica.
StateChangeHook = Callable[[str, BreakerState, BreakerState, str], None]


class SharedBreakerHook(Protocol):
    """What a breaker asks of the fleet, all synchronous: the hook answers from its local
    view of Redis and does any Redis work in the background."""

    def may_trial(self, breaker: AsyncCircuitBreaker) -> bool:
        """Whether this process may take the half-open trial now (it holds the fleet's
        lease); may start taking the lease for a later call."""
        ...

    def could_trial(self, breaker: AsyncCircuitBreaker) -> bool:
        """`may_trial` without side effects (for `would_admit`)."""
        ...

    def trial_admitted(self, breaker: AsyncCircuitBreaker) -> None:
        """The trial is out: hold the lease for as long as the call may take."""
        ...

    def trial_released(self, breaker: AsyncCircuitBreaker) -> None:
        """The trial ended without a verdict: give the lease back."""
        ...

    def changed(self, breaker: AsyncCircuitBreaker, old: BreakerState, new: BreakerState) -> None:
        """A transition made by this process (never one applied from the fleet)."""
        ...

    async def claim(self, breaker: AsyncCircuitBreaker) -> None:
        """Try to take the trial lease now (for a caller that can wait, the health probe)."""
        ...


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
        # Fleet coordination (None: this process alone), and whether the transition under way
        # was applied from the fleet (not reported back to it).
        self.shared: SharedBreakerHook | None = None
        self._applying = False
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
            free = self.open_remaining_s() <= 0
        else:
            free = not self._trial_in_flight
        return free and (self.shared is None or self.shared.could_trial(self))

    def admit(self) -> Ticket | None:
        """A ticket to call the provider, or None to skip it now."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Ticket(state, generation=self._generation)
        if state is BreakerState.OPEN:
            if self.open_remaining_s() > 0:
                return None
        elif self._trial_in_flight:
            return None
        shared = self.shared
        if shared is not None and not shared.may_trial(self):
            return None  # another process holds the fleet's trial, or the lease is on its way
        if state is BreakerState.OPEN:
            self._cb.half_open()
        self._trial_in_flight = True
        ticket = Ticket(BreakerState.HALF_OPEN, trial=True, generation=self._generation)
        if shared is not None:
            shared.trial_admitted(self)
        return ticket

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

    async def claim_trial(self) -> Ticket | None:
        """`admit_trial` for a caller that can wait a Redis round trip (the health probe):
        with a fleet, the trial lease is taken first, so an idle fleet still heals within
        one probe interval of the open period's end."""
        shared = self.shared
        if shared is not None and self.state is not BreakerState.CLOSED and self.would_admit():
            await shared.claim(self)
        return self.admit_trial()

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
            if self.shared is not None:
                self.shared.trial_released(self)

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
            self._on_change(self.name, old, new, "fleet" if self._applying else "local")
        if self.shared is not None and not self._applying:
            self.shared.changed(self, old, new)

    # --- transitions made elsewhere in the fleet ---------------------------------------------
    def apply_open(self, remaining_s: float) -> None:
        """Open (or keep open) until `remaining_s` from now, as another process decided.
        Calls admitted before are settled as stale (a new generation)."""
        if self.state is not BreakerState.OPEN:
            self._apply(self._cb.open)
        remaining = min(max(0.0, remaining_s), self.reset_timeout_s)
        self._opened_at = self._clock.monotonic() - (self.reset_timeout_s - remaining)

    def apply_closed(self) -> None:
        """Close, as another process's trial proved the provider back."""
        if self.state is not BreakerState.CLOSED:
            self._apply(self._cb.close)

    def apply_half_open(self) -> None:
        """Half-open with the trial out elsewhere: admission then waits for the fleet."""
        if self.state is not BreakerState.HALF_OPEN:
            self._apply(self._cb.half_open)

    def _apply(self, transition: Callable[[], object]) -> None:
        self._applying = True
        try:
            transition()
        finally:
            self._applying = False


def _noop() -> None:
    return None


def _raise_fault() -> None:
    raise _Fault
