"""Circuit breakers shared by every process of the gateway, through Redis.

One replica's breaker opening means the provider is failing for all of them, so the others
should stop sending it calls at once rather than each paying `fail_max` failures of its own;
and when the open period ends, the fleet should make one trial call, not one per replica.
This is the `SharedBreakerHook` that gives `AsyncCircuitBreaker` those two properties while
its own logic (admission, generations, outcomes) stays as it is.

In Redis, per breaker (`<prefix>breaker:<name>`): a hash with the fleet's state (`open` or
`closed`), when an open period ends (`until`, milliseconds on Redis' clock, so replicas with
skewed clocks agree) and a generation bumped on every fleet transition; beside it the trial
lease (`<prefix>breaker:<name>:trial`, the holder's replica id, with a TTL).

- A transition made here (a trip after `fail_max` local faults, a trial's verdict) is
  written by one script that also publishes it on `<prefix>breakers`; every replica applies a
  message within milliseconds, and polls every `poll_s` (0.5 s) for what it missed (a dropped
  subscription, a replica started later), so each is current within 1 s.
- Half-open: the open period is over in the fleet's record. The first local call that wants
  the trial finds no lease and is skipped while the lease is taken in the background
  (`SET NX` with a short reservation, `RESERVE_S`); the replica that gets it admits the next
  call as the trial and extends the lease to the longest a call may take (`trial_ttl_s`). The
  verdict closes or re-opens the breaker for everyone and drops the lease; a trial that ends
  without a verdict gives it back. If the holder dies, the lease expires and another replica
  takes it. The health probe waits for the lease (`claim`), so an idle fleet heals too.
- Closed-state admission never reaches this module: the hot path is local memory.
- Consecutive-failure counts stay per replica (each replica trips on what it sees).

When Redis is unreachable (`SharedState.up` false), `may_trial` says yes and every replica
runs its breaker alone, as with one process. A transition that could not be written is
written when Redis is back (`on_up`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from app.core.clock import Clock
from app.core.resilience.breaker import AsyncCircuitBreaker, BreakerState
from app.core.shared import SharedState, SharedStateDown

log = logging.getLogger("app.breaker.shared")

# How often each replica reads every breaker's fleet record (beside the pub/sub messages).
POLL_S = 0.5
# A lease taken for a call that has not come yet: short, so a replica that took it and got
# no call does not hold the fleet's trial for long.
RESERVE_S = 2.0
# After a failed or refused attempt to take the lease, wait this long before the next one.
RETRY_TAKE_S = 0.1
# Fleet records outlive any open period by far; they expire so removed providers leave none.
RECORD_TTL_MS = 86_400_000

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# A transition made by one replica: open for ARGV[2] ms, or closed. Drops the trial lease
# (the trial, if any, is decided) and tells every replica. The generation grows with Redis'
# clock (at least by one), so a Redis that restarted empty still hands out generations newer
# than any a replica has seen.
# KEYS: record, lease. ARGV: state, open ms, replica id, channel, breaker name.
_TRANSITION = (
    _NOW_MS
    + """
local gen = math.max((tonumber(redis.call('HGET', KEYS[1], 'gen')) or 0) + 1, now)
local until_ms = 0
if ARGV[1] == 'open' then until_ms = now + tonumber(ARGV[2]) end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'until', until_ms, 'by', ARGV[3], 'gen', gen)
redis.call('PEXPIRE', KEYS[1], RECORD_TTL_MS)
redis.call('DEL', KEYS[2])
local remaining = math.max(0, until_ms - now)
redis.call('PUBLISH', ARGV[4], cjson.encode({p = ARGV[5], s = ARGV[1], r = remaining,
  g = gen, by = ARGV[3], l = 0}))
return {gen, remaining}
""".replace("RECORD_TTL_MS", str(RECORD_TTL_MS))
)

# Take the trial lease if the fleet's open period is over and nobody holds it.
# KEYS: record, lease. ARGV: replica id, reservation ms, channel, breaker name.
# Returns {kind, ms, gen}: taken (ms: the lease), held (ms: the holder's lease left),
# open (ms: the open period left), closed.
_TAKE = (
    _NOW_MS
    + """
local rec = redis.call('HMGET', KEYS[1], 'state', 'until', 'gen')
local gen = tonumber(rec[3]) or 0
if rec[1] == 'closed' then return {'closed', 0, gen} end
local until_ms = tonumber(rec[2]) or 0
if rec[1] == 'open' and until_ms > now then return {'open', until_ms - now, gen} end
local holder = redis.call('GET', KEYS[2])
if holder then
  local left = redis.call('PTTL', KEYS[2])
  if holder == ARGV[1] then return {'taken', left, gen} end
  return {'held', left, gen}
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', tonumber(ARGV[2]))
redis.call('PUBLISH', ARGV[3], cjson.encode({p = ARGV[4], s = 'half_open', r = 0, g = gen,
  by = ARGV[1], l = tonumber(ARGV[2])}))
return {'taken', tonumber(ARGV[2]), gen}
"""
)

# The trial is out: hold the lease for the longest the call may take (if still ours).
# KEYS: lease. ARGV: replica id, ms.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"""

# The trial ended without a verdict: give the lease back (if still ours).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Every breaker's record in one round trip. KEYS: record, lease, record, lease, ...
# Returns per breaker {state or '', ms of the open period left, gen, lease holder or '',
# ms of the lease left}.
_READ = (
    _NOW_MS
    + """
local out = {}
for i = 1, #KEYS, 2 do
  local rec = redis.call('HMGET', KEYS[i], 'state', 'until', 'gen')
  local holder = redis.call('GET', KEYS[i + 1])
  local left = 0
  if holder then left = redis.call('PTTL', KEYS[i + 1]) else holder = '' end
  local remaining = math.max(0, (tonumber(rec[2]) or 0) - now)
  out[#out + 1] = {rec[1] or '', remaining, tonumber(rec[3]) or 0, holder, left}
end
return out
"""
)


@dataclass
class _Fleet:
    """This replica's view of one breaker's fleet record."""

    breaker: AsyncCircuitBreaker
    record: str
    lease: str
    trial_ttl_ms: int
    seen_gen: int = 0  # the newest fleet generation applied (or written) here
    lease_until: float = 0.0  # monotonic: this replica holds the trial lease until then
    elsewhere_until: float = 0.0  # monotonic: another replica holds it until about then
    next_take: float = 0.0  # monotonic: no new attempt to take the lease before then
    taking: bool = False
    pending: int = 0  # our own transitions on their way to Redis
    dirty: bool = False  # a transition made here that Redis never got


class SharedBreakers:
    """The fleet view of the AI providers' breakers: one per app, started with it."""

    def __init__(
        self,
        shared: SharedState,
        clock: Clock,
        *,
        poll_s: float = POLL_S,
        reserve_s: float = RESERVE_S,
    ) -> None:
        self._shared = shared
        self._clock = clock
        self._poll_s = poll_s
        self._reserve_ms = int(reserve_s * 1000)
        self._channel = shared.key("breakers")
        self._fleets: dict[str, _Fleet] = {}
        self._transition = shared.script(_TRANSITION)
        self._take = shared.script(_TAKE)
        self._extend = shared.script(_EXTEND)
        self._release = shared.script(_RELEASE)
        self._read = shared.script(_READ)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None
        # Set by aclose: a cancellation that lands while a Redis read's own timeout fires can
        # come out as TimeoutError (which the loop survives), so the loop also checks this.
        self._closing = False
        shared.on_up(self._reconcile)

    def attach(self, breaker: AsyncCircuitBreaker, *, trial_ttl_s: float) -> None:
        """Share `breaker` with the fleet; `trial_ttl_s` bounds its longest trial call."""
        record = self._shared.key("breaker", breaker.name)
        self._fleets[breaker.name] = _Fleet(
            breaker, record, record + ":trial", int(trial_ttl_s * 1000)
        )
        breaker.shared = self

    async def start(self) -> None:
        """Catch up with the fleet before the first request, then follow it."""
        await self.poll()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def aclose(self) -> None:
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- SharedBreakerHook -------------------------------------------------------------------
    def may_trial(self, breaker: AsyncCircuitBreaker) -> bool:
        if not self._shared.up:
            return True  # Redis unreachable: this replica's breaker decides alone
        fleet = self._fleets[breaker.name]
        now = self._clock.monotonic()
        if fleet.lease_until > now:
            return True
        if fleet.elsewhere_until <= now and not fleet.taking and fleet.next_take <= now:
            fleet.taking = True
            self._spawn(self._take_lease(fleet))
        return False

    def could_trial(self, breaker: AsyncCircuitBreaker) -> bool:
        if not self._shared.up:
            return True
        fleet = self._fleets[breaker.name]
        now = self._clock.monotonic()
        return fleet.lease_until > now or fleet.elsewhere_until <= now

    def trial_admitted(self, breaker: AsyncCircuitBreaker) -> None:
        fleet = self._fleets[breaker.name]
        if fleet.lease_until > self._clock.monotonic():
            self._spawn(self._extend_lease(fleet))

    def trial_released(self, breaker: AsyncCircuitBreaker) -> None:
        fleet = self._fleets[breaker.name]
        if fleet.lease_until > 0:
            fleet.lease_until = 0.0
            self._spawn(self._give_back(fleet))

    def changed(self, breaker: AsyncCircuitBreaker, old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.HALF_OPEN:
            return  # taking the lease already told the fleet
        fleet = self._fleets[breaker.name]
        fleet.lease_until = 0.0
        fleet.pending += 1
        self._spawn(self._write(fleet, new))

    async def claim(self, breaker: AsyncCircuitBreaker) -> None:
        if not self._shared.up:
            return
        fleet = self._fleets[breaker.name]
        if fleet.lease_until <= self._clock.monotonic() and not fleet.taking:
            fleet.taking = True
            await self._take_lease(fleet)

    # --- Redis work, off the request path -------------------------------------------------------
    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, fleet: _Fleet, state: BreakerState) -> None:
        """Tell the fleet about a transition made here."""
        try:
            await self._publish(fleet, state)
        except SharedStateDown:
            fleet.dirty = True
        finally:
            fleet.pending -= 1

    async def _publish(self, fleet: _Fleet, state: BreakerState) -> None:
        breaker = fleet.breaker
        if state is BreakerState.OPEN:
            word, open_ms = "open", int(breaker.open_remaining_s() * 1000)
        else:
            word, open_ms = "closed", 0
        gen, _ = await self._shared.run(
            self._transition,
            [fleet.record, fleet.lease],
            [word, open_ms, self._shared.replica_id, self._channel, breaker.name],
        )
        fleet.seen_gen = max(fleet.seen_gen, int(gen))
        fleet.dirty = False

    async def _take_lease(self, fleet: _Fleet) -> None:
        try:
            kind, ms, gen = await self._shared.run(
                self._take,
                [fleet.record, fleet.lease],
                [self._shared.replica_id, self._reserve_ms, self._channel, fleet.breaker.name],
            )
        except SharedStateDown:
            return
        finally:
            fleet.taking = False
        now = self._clock.monotonic()
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind == "taken":
            fleet.lease_until = self._lease_end(now, int(ms))
            fleet.elsewhere_until = 0.0
            return
        fleet.next_take = now + RETRY_TAKE_S
        if kind == "held":
            fleet.elsewhere_until = now + int(ms) / 1000
        elif int(gen) > fleet.seen_gen and not fleet.pending:
            # The fleet moved on (closed, or open again) and we missed it: catch up.
            fleet.seen_gen = int(gen)
            self._apply(fleet, kind, int(ms) / 1000)

    async def _extend_lease(self, fleet: _Fleet) -> None:
        with contextlib.suppress(SharedStateDown):
            kept = await self._shared.run(
                self._extend, [fleet.lease], [self._shared.replica_id, fleet.trial_ttl_ms]
            )
            if kept:
                fleet.lease_until = self._lease_end(self._clock.monotonic(), fleet.trial_ttl_ms)

    def _lease_end(self, now: float, ttl_ms: int) -> float:
        """When our lease ends, by our clock: Redis started its TTL up to one round trip
        (REDIS_TIMEOUT_S at most) before we read the answer, so we stop that much earlier."""
        return now + ttl_ms / 1000 - self._shared.timeout_s

    async def _give_back(self, fleet: _Fleet) -> None:
        with contextlib.suppress(SharedStateDown):
            await self._shared.run(self._release, [fleet.lease], [self._shared.replica_id])

    async def _reconcile(self) -> None:
        """Redis is back: write what happened here while it was away."""
        for fleet in self._fleets.values():
            breaker = fleet.breaker
            # An open period that is over says nothing any more (and would hold up replicas
            # that have seen the provider answer); a half-open one is decided by its trial.
            if fleet.dirty and (
                breaker.state is BreakerState.CLOSED or breaker.open_remaining_s() > 0
            ):
                await self._publish(fleet, breaker.state)
            fleet.dirty = False

    # --- following the fleet -----------------------------------------------------------------
    async def poll(self) -> None:
        """Read every record and apply what changed (what a lost message would have said)."""
        fleets = list(self._fleets.values())
        if not fleets:
            return
        keys = [key for fleet in fleets for key in (fleet.record, fleet.lease)]
        try:
            rows = await self._shared.run(self._read, keys, [])
        except SharedStateDown:
            return
        now = self._clock.monotonic()
        for fleet, row in zip(fleets, rows, strict=True):
            state, remaining_ms, gen, holder, lease_ms = (_text(v) for v in row)
            if holder and holder != self._shared.replica_id:
                fleet.elsewhere_until = now + int(lease_ms) / 1000
            else:
                fleet.elsewhere_until = 0.0
                if not holder:
                    fleet.lease_until = min(fleet.lease_until, now)  # not ours any more
            if state and int(gen) > fleet.seen_gen and not fleet.pending:
                fleet.seen_gen = int(gen)
                self._apply(fleet, state, int(remaining_ms) / 1000, lease_elsewhere=bool(holder))

    def on_message(self, data: bytes | str) -> None:
        """One pub/sub message from another replica. Anything that is not a well-formed
        message about a breaker of ours is ignored (whoever can publish on the channel can
        send anything); its numbers are bounded by our own settings."""
        parsed = _parse(data)
        if parsed is None:
            return
        name, state, remaining_ms, gen, by, lease_ms = parsed
        fleet = self._fleets.get(name)
        if fleet is None or by == self._shared.replica_id:
            return
        if state == "half_open":
            if gen >= fleet.seen_gen:
                lease_s = min(lease_ms, fleet.trial_ttl_ms) / 1000
                fleet.elsewhere_until = self._clock.monotonic() + lease_s
                if not fleet.pending:
                    self._apply(fleet, state, 0.0, lease_elsewhere=True)
            return
        if gen > fleet.seen_gen and not fleet.pending:
            fleet.seen_gen = gen
            fleet.elsewhere_until = 0.0
            self._apply(fleet, state, remaining_ms / 1000)

    def _apply(
        self, fleet: _Fleet, state: str, remaining_s: float, *, lease_elsewhere: bool = False
    ) -> None:
        breaker = fleet.breaker
        if state == "closed":
            fleet.lease_until = 0.0
            breaker.apply_closed()
        elif state == "open" and remaining_s > 0:
            fleet.lease_until = 0.0
            breaker.apply_open(remaining_s)
        elif lease_elsewhere:  # open period over, the trial is out on another replica
            breaker.apply_half_open()
        elif breaker.state is not BreakerState.HALF_OPEN:
            breaker.apply_open(0.0)  # open period over: the next call asks for the lease

    async def _watch(self) -> None:
        """Messages as they come, and a poll every `poll_s` whatever happens to them."""
        loop = asyncio.get_running_loop()
        pubsub: PubSub | None = None
        next_poll = loop.time() + self._poll_s
        try:
            while not self._closing:
                try:
                    if pubsub is None and self._shared.up:
                        pubsub = await self._subscribe()
                    wait = max(0.0, next_poll - loop.time())
                    if pubsub is None:
                        await asyncio.sleep(wait)
                    else:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=wait
                        )
                        if message is not None and message.get("type") == "message":
                            self.on_message(message["data"])
                # RuntimeError: uvloop's "handler is closed" on a connection Redis reset.
                except (RedisError, OSError, TimeoutError, RuntimeError):
                    await _drop(pubsub)
                    pubsub = None
                    await asyncio.sleep(min(self._poll_s, max(0.0, next_poll - loop.time())))
                if loop.time() >= next_poll:
                    next_poll = loop.time() + self._poll_s
                    try:
                        await self.poll()
                    except Exception:  # a bug here must not end following the fleet
                        log.exception("breaker poll failed")
        finally:
            await _drop(pubsub)

    async def _subscribe(self) -> PubSub:
        pubsub = self._shared.client.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(max(self._shared.timeout_s, 0.5)):
                await pubsub.subscribe(self._channel)
        except BaseException:
            await _drop(pubsub)
            raise
        return pubsub


async def _drop(pubsub: PubSub | None) -> None:
    if pubsub is not None:
        with contextlib.suppress(RedisError, OSError, TimeoutError, RuntimeError):
            await pubsub.aclose()  # type: ignore[no-untyped-call]


_STATES = frozenset({"open", "closed", "half_open"})


def _parse(data: bytes | str) -> tuple[str, str, float, int, str, float] | None:
    """(breaker, state, open ms left, generation, sender, lease ms) of a message, or None."""
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(message, dict):
        return None
    name, state, by = message.get("p"), message.get("s"), message.get("by")
    remaining, gen, lease = message.get("r"), message.get("g"), message.get("l")
    if not (isinstance(name, str) and isinstance(by, str) and state in _STATES):
        return None
    if not (isinstance(gen, int) and not isinstance(gen, bool) and gen >= 0):
        return None
    remaining_ms, lease_ms = _bounded(remaining), _bounded(lease)
    if remaining_ms is None or lease_ms is None:
        return None
    return name, str(state), remaining_ms, gen, by, lease_ms


def _bounded(value: object) -> float | None:
    """A message's millisecond count: a number in [0, 1e12) (so no NaN, no infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value < 1e12 else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__: Sequence[str] = ("POLL_S", "RESERVE_S", "SharedBreakers")
