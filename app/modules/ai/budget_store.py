"""Budgets on Redis, so N processes spend like one gateway.

Every read-modify-write is one Lua script (budget_lua.py):
- **reserve**: the worst case against every budget that applies, daily and monthly, in one
  script: all held or none. A reservation carries a lease (the call's deadline plus
  LEASE_MARGIN_S): a replica killed mid-call cannot hold money for longer, the scripts drop
  expired reservations themselves.
- **settle**: never on the request path. Settles go into this replica's journal and are sent
  in order, in batches, by one task; each carries a sequence number, so a settle sent twice
  (an answer lost to a timeout, a resend after an outage) counts once.
- **seed**: a period Redis has nothing for (first start, a new day, Redis back empty) is
  seeded once from the ledger by a script that writes only if no seed is there: two replicas
  may both read the ledger, only the first writes.

**When Redis is slow or gone** (`SharedStateDown`, or `SharedState.up` false) the gateway keeps
serving from local state and never overspends. While it sees Redis, each replica keeps an
**outage reserve** on every budget, held on Redis like a call in flight (STANDBY, resized at
every refresh): BUDGET_OUTAGE_SHARE of what is left, divided by the live replicas. Cut off,
a replica spends only that reserve, which no other replica can spend meanwhile, whether
they see Redis or not: a Redis that one replica cannot reach while the others can (slow, or
that replica's own loop too busy) cannot make the fleet spend a share twice. The reserve is
not lost money: its owner draws on it through Redis when nothing else is left, so a budget
is still spent to its last cent; a killed replica's reserve ends with its lease
(OUTAGE_RESERVE_LEASE_S), and a replica cut off for longer than that spends nothing more.
What a replica counts on is never more than Redis keeps for it, whatever answers an outage
cuts off: STANDBY never shrinks a reserve below what its owner counted on when it asked (the
owner counts on the new size once it has the answer), and a call whose script was on the
wire when the outage began counts against the reserve until its answer says what it took.
When Redis answers again (`on_up`), the state is reconciled before Redis is used again: the
current periods are seeded if Redis came back empty, reservations still in flight are held
again, the journal is sent, each settle counted once, and the reserve is sized again.

**The seed and the outage spend are never both counted.** A seed holds the ledger rows
written before its `cut` (the seeding time minus SEED_LAG: `seed_lag_s`, ten ledger flush
intervals and at least 1 s, time enough for a replica's buffered rows to reach the
database). A settle is counted in a seeded period only if it happened at or after the cut;
one from before is in the ledger already. Each replica keeps its settles of the last
2 x lag + JOURNAL_SLACK_S (and every one not yet sent) to resend after a reseed. What this
cannot see: a row still unwritten a whole lag after its call (a database down for longer) is
in neither, and the settles of a replica that died with rows younger than the lag are lost
with it; both undercount by at most what those rows cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app.core.clock import Clock
from app.core.ids import random_hex
from app.core.settings import ProviderName, Settings
from app.core.shared import SharedState, SharedStateDown
from app.modules.ai.budget import (
    DAY,
    HELD_RETRY_AFTER_S,
    MONTH,
    Alerter,
    Blocked,
    BudgetRules,
    GaugeView,
    Reservation,
    budget_line,
    from_nano,
    ledger_spend,
    month_of,
    register_gauges,
    to_nano,
    usd,
    visible,
)
from app.modules.ai.budget_lua import APPLY, HOLD, RESERVE, SEED, STANDBY, VIEW
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.usage import UsageLedger

log = logging.getLogger("app.ai.budget")

# A reservation's lease runs this long past the call's deadline: the settle of a call cut at
# its deadline is on its way by then. Reservations are released by the scripts once expired.
LEASE_MARGIN_S = 5.0
# Settles kept past 2 x lag, for a reseed noticed late (by the next refresh).
JOURNAL_SLACK_S = 10.0
# A replica's outage reserve is held this long past its last refresh: a killed replica's
# reserve is free again after it, and a replica cut off for longer stops spending (its
# reserve may be gone on Redis). The replica trusts it for OUTAGE_RESERVE_MARGIN_S less,
# counted from before the script was sent, so its clock never runs past Redis' expiry.
OUTAGE_RESERVE_LEASE_S = 120.0
OUTAGE_RESERVE_MARGIN_S = 5.0
# The call sizes an outage reserve is sized against: the last this many refresh intervals.
CALL_SIZE_INTERVALS = 60
# Settles per script call when the journal is sent.
BATCH = 200
# Reconciliation rounds (hold, send, refresh) before Redis decides again even if calls keep
# coming in meanwhile.
SYNC_ROUNDS = 5
# A period's hash lives this long after the period ended.
KEEP_AFTER_PERIOD_S = 3 * 86400

Line = tuple[str, str, str, int]  # (hash key, period, budget, limit in billionths)


def seed_lag_s(settings: Settings) -> float:
    """How old a ledger row must be to be counted in a seed (see the module docstring)."""
    return max(1.0, 10 * settings.ledger_flush_interval_s)


@dataclass(slots=True)
class SharedReservation(Reservation):
    """A reservation of the shared store: its id (the settle's key), lines and lease."""

    id: str = ""
    lines: tuple[Line, ...] = ()
    held: int = 0  # the amount, in billionths
    expires_ms: int = 0
    # Redis holds it now (False: made from the local share, or Redis lost it).
    in_redis: bool = False
    # The outage whose local share it was taken from.
    outage: _Outage | None = None


@dataclass(slots=True)
class _Op:
    """One settle, as journaled and sent."""

    seq: int
    t_ms: int
    id: str
    held: int
    actual: int
    lines: tuple[Line, ...]


@dataclass(slots=True)
class _Outage:
    """Redis unknown: what this replica saw last, its outage reserve on each budget (valid
    until `until`, monotonic), and what it spent from it since."""

    seen: dict[str, dict[str, tuple[int, int]]]
    reserves: dict[str, dict[str, int]]
    until: float
    used: dict[tuple[str, str], int] = field(default_factory=dict)  # held + spent, local
    spent: dict[tuple[str, str], int] = field(default_factory=dict)  # every settle meanwhile
    # Reservations whose RESERVE was on the wire when the outage began: each may have taken
    # from the reserve on Redis, so each counts in `used` until its answer says how much.
    pending: set[str] = field(default_factory=set)

    def allowance(self, key: str, name: str, now: float) -> int:
        if now >= self.until:
            return 0
        return self.reserves.get(key, {}).get(name, 0)


class RedisBudgets:
    """The shared store (REDIS_URL set): numbers on Redis, a local view for reads."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        metrics: AIMetrics,
        shared: SharedState,
        ledger: UsageLedger,
    ) -> None:
        self._rules = BudgetRules(settings, clock)
        self._alerter = Alerter(settings, metrics)
        self._clock = clock
        self._shared = shared
        self._ledger = ledger
        self._lag_ms = int(seed_lag_s(settings) * 1000)
        self._keep_ms = 2 * self._lag_ms + int(JOURNAL_SLACK_S * 1000)
        self._refresh_s = settings.redis_heartbeat_s
        self._reserve = shared.script(RESERVE)
        self._view_script = shared.script(VIEW)
        self._seed_script = shared.script(SEED)
        self._hold_script = shared.script(HOLD)
        self._apply_script = shared.script(APPLY)
        self._standby_script = shared.script(STANDBY)
        self._outage_share = settings.budget_outage_share
        self._res_key = shared.key("budget", "res")
        self._lease_key = shared.key("budget", "lease")
        # hash key -> budget -> (spent, held), as Redis last said (or the ledger at start).
        self._view: dict[str, dict[str, tuple[int, int]]] = {}
        self._seeds: dict[str, str] = {}  # hash key -> the seed this replica applied under
        # hash key -> budget -> the outage reserve this replica counts on, trusted until then:
        # never more than Redis keeps for it (see `_standby` and `_answered`).
        self._reserves: dict[str, dict[str, int]] = {}
        self._reserves_until = -math.inf
        self._reserve_on_redis = False  # Redis may keep a reserve of this replica's
        self._epoch = 0  # counted on reserves from before a reconcile are not counted on
        self._standby_lock = asyncio.Lock()
        # What RESERVE answers said was taken from the reserve while a STANDBY was out.
        self._standby_draws: dict[tuple[str, str], int] | None = None
        # Reservations whose RESERVE script is on the wire.
        self._inflight: dict[str, SharedReservation] = {}
        # The largest worst case reserved in each of the last refresh intervals: the
        # smallest outage reserve worth keeping (one that pays for no call is not kept).
        self._largest_calls: deque[int] = deque([0], maxlen=CALL_SIZE_INTERVALS)
        self._open: dict[str, SharedReservation] = {}
        self._journal: deque[_Op] = deque()
        self._seq = 0
        self._sent = 0  # every settle up to this seq is applied under the seeds known
        self._synced = False
        self._syncing = False
        self._outage: _Outage | None = None
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._sync_lock = asyncio.Lock()
        self._seeding: dict[str, asyncio.Task[str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._kick: set[asyncio.Task[None]] = set()
        shared.on_up(self.sync)
        register_gauges(metrics, self._rules, self._gauge_view)

    # -- keys and periods ------------------------------------------------------------------

    def _keys(self, today: date) -> tuple[str, str]:
        return (
            self._shared.key("budget", "d", today.isoformat()),
            self._shared.key("budget", "m", month_of(today)),
        )

    def _now_ms(self) -> int:
        return int(self._clock.now().timestamp() * 1000)

    def seconds_until_reset(self) -> float:
        return self._rules.seconds_until(DAY)

    @property
    def state(self) -> str:
        """`redis` (Redis decides) or `local-share` (Redis away or not reconciled yet: this
        replica spends its outage reserve)."""
        return "redis" if self.synced else "local-share"

    @property
    def synced(self) -> bool:
        """Redis is up and this replica's state is reconciled with it."""
        return self._synced and self._shared.up

    # -- reserve ---------------------------------------------------------------------------

    async def acquire(
        self, provider: ProviderName, caller: str, worst_case_usd: float, *, lease_s: float
    ) -> Reservation | Blocked:
        today = self._rules.today()
        amount = usd(worst_case_usd)
        if amount <= 0:
            return Reservation(today, (), Decimal(0))
        rules = self._rules
        daily = rules.lines(DAY, provider, caller)
        monthly = rules.lines(MONTH, provider, caller) if rules.monthly else []
        if not daily and not monthly:
            return Reservation(today, (), amount)
        day_key, month_key = self._keys(today)
        lines = tuple((day_key, DAY, n, to_nano(v)) for n, v in daily) + tuple(
            (month_key, MONTH, n, to_nano(v)) for n, v in monthly
        )
        reservation = SharedReservation(
            today,
            tuple(n for n, _ in daily),
            amount,
            month=month_of(today),
            month_budgets=tuple(n for n, _ in monthly),
            id=random_hex()[:20],
            lines=lines,
            held=to_nano(amount),
            expires_ms=self._now_ms() + int((max(0.0, lease_s) + LEASE_MARGIN_S) * 1000),
        )
        if self._synced and not self._shared.up:
            self._lost("Redis unreachable")
        calls = self._largest_calls
        calls[-1] = max(calls[-1], reservation.held)
        if not self.synced:
            return self._reserve_local(reservation)
        self._inflight[reservation.id] = reservation
        try:
            verdict, drawn = await self._reserve_shared(reservation, day_key, month_key)
        except SharedStateDown:
            # Redis may have run the script before the answer was lost. The call keeps its id:
            # whatever Redis holds under it (and took from the reserve) is what the local
            # reservation counts, and its settle releases it (HOLD and RESERVE hold an id
            # once). Entered while the script is in flight, the outage counts the call.
            self._lost("reserve")
            return self._reserve_local(reservation, sent=True)
        except asyncio.CancelledError:  # the caller went away: release it if Redis held it
            self._journal_settle(reservation, 0)
            raise
        finally:
            del self._inflight[reservation.id]
        self._answered(reservation, drawn)
        if verdict is not None:
            return verdict
        return self._reserve_local(reservation)

    async def _reserve_shared(
        self, reservation: SharedReservation, day_key: str, month_key: str
    ) -> tuple[Reservation | Blocked | None, list[int]]:
        """One script against every budget: the verdict (None when Redis cannot decide: go
        local) and what the call took from this replica's reserve on each line."""
        nothing = [0] * len(reservation.lines)
        args: list[Any] = [
            self._now_ms(),
            reservation.id,
            reservation.held,
            reservation.expires_ms,
            len(reservation.lines),
        ]
        for key, _, name, limit in reservation.lines:
            args += [1 if key == day_key else 2, name, limit]
        args.append(self._shared.replica_id)
        keys = [day_key, month_key, self._res_key, self._lease_key]
        for _ in range(2):
            result = await self._shared.run(self._reserve, keys, args)
            status = _text(result[0])
            if status != "unseeded":
                break
            key = keys[int(result[1]) - 1]
            if key in self._seeds:  # seeded before and gone now: Redis lost its state
                self._lost("Redis came back empty")
                return None, nothing
            if not await self._seed(key):
                return None, nothing
        else:
            return None, nothing
        self._note_seed(day_key, _text(result[2]))
        self._note_seed(month_key, _text(result[3]))
        values = [int(v) for v in result[4:]]
        drawn = values[2::3]
        for index, (key, _, name, _) in enumerate(reservation.lines):
            self._view.setdefault(key, {})[name] = (values[3 * index], values[3 * index + 1])
        if status == "ok":
            reservation.in_redis = True
            self._open[reservation.id] = reservation
            return reservation, drawn
        _, period, name, _ = reservation.lines[int(result[1]) - 1]
        if status == "held":
            wait = min(HELD_RETRY_AFTER_S, self._rules.seconds_until(period))
            return Blocked(name, wait, held=True, period=period), drawn
        return Blocked(name, self._rules.seconds_until(period), period=period), drawn

    def _answered(self, reservation: SharedReservation, drawn: list[int]) -> None:
        """A RESERVE answer: what the call took from the reserve is no longer counted on
        (also by a STANDBY still out, whose answer may predate it); if an outage began
        while the script was out, the call now counts there only for what it took."""
        outage = self._outage
        if outage is not None and reservation.id not in outage.pending:
            outage = None
        if outage is not None:
            outage.pending.discard(reservation.id)
        for (key, _, name, _), amount in zip(reservation.lines, drawn, strict=True):
            line = (key, name)
            if outage is not None:
                outage.used[line] = outage.used.get(line, 0) - reservation.held + amount
            if not amount:
                continue
            counted = self._reserves.get(key, {})
            if name in counted:
                counted[name] = max(0, counted[name] - amount)
            if self._standby_draws is not None:
                self._standby_draws[line] = self._standby_draws.get(line, 0) + amount

    def _reserve_local(
        self, reservation: SharedReservation, *, sent: bool = False
    ) -> Reservation | Blocked:
        """Redis unknown: against this replica's outage reserve. Truly spent (as last seen,
        plus what this replica spent since) waits for the reset; a reserve used up is a short
        wait (Redis may be back, calls may end). `sent`: its RESERVE script may have run;
        refused here, it stays counted (what Redis holds under its id may have come from the
        reserve) until the settle of 0 journaled for it releases that hold."""
        outage = self._outage or self._enter_outage()
        amount = reservation.held
        counted = reservation.id in outage.pending
        outage.pending.discard(reservation.id)
        now = self._clock.monotonic()
        spent_at: Line | None = None
        held_at: Line | None = None
        for line in reservation.lines:
            key, period, name, limit = line
            seen_spent = outage.seen.get(key, {}).get(name, (0, 0))[0]
            if seen_spent + outage.spent.get((key, name), 0) + amount > limit:
                if spent_at is None or (period == MONTH and spent_at[1] == DAY):
                    spent_at = line
            elif held_at is None:
                used = outage.used.get((key, name), 0) - (amount if counted else 0)
                if used + amount > outage.allowance(key, name, now):
                    held_at = line
        if (spent_at or held_at) and sent:
            self._journal_settle(reservation, 0)
        if spent_at is not None:
            return Blocked(spent_at[2], self._rules.seconds_until(spent_at[1]), period=spent_at[1])
        if held_at is not None:
            wait = min(HELD_RETRY_AFTER_S, self._rules.seconds_until(held_at[1]))
            return Blocked(held_at[2], wait, held=True, period=held_at[1])
        if not counted:
            for key, _, name, _ in reservation.lines:
                outage.used[(key, name)] = outage.used.get((key, name), 0) + amount
        reservation.outage = outage
        self._open[reservation.id] = reservation
        return reservation

    def _enter_outage(self) -> _Outage:
        self._outage = outage = _Outage(
            seen={key: dict(lines) for key, lines in self._view.items()},
            reserves={key: dict(lines) for key, lines in self._reserves.items()},
            until=self._reserves_until,
        )
        for op in self._journal:  # settled here, not yet (known to be) on Redis
            if op.seq > self._sent:
                for key, _, name, _ in op.lines:
                    outage.spent[(key, name)] = outage.spent.get((key, name), 0) + op.actual
        for reservation in self._inflight.values():  # see `_Outage.pending`
            outage.pending.add(reservation.id)
            for key, _, name, _ in reservation.lines:
                outage.used[(key, name)] = outage.used.get((key, name), 0) + reservation.held
        log.warning("budgets: Redis unknown, spending at most this replica's outage reserve")
        return self._outage

    def _lost(self, why: str) -> None:
        """Redis cannot be trusted now: local shares (once confirmed) until `sync` has run
        again."""
        was = self._synced
        self._synced = False
        if self._outage is None:
            self._enter_outage()
        if was:
            log.warning("budgets: shared state lost (%s)", why)
            if self._shared.up:  # Redis answers (it came back empty): reconcile now
                self._spawn(self.sync())

    # -- settle ----------------------------------------------------------------------------

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Book the real cost: locally at once, on Redis by the journal's sender."""
        if reservation.settled:
            return
        reservation.settled = True
        if not isinstance(reservation, SharedReservation):
            return  # free, or no budget applies
        actual = to_nano(usd(actual_usd))
        self._open.pop(reservation.id, None)
        outage = self._outage
        if outage is not None:
            for key, _, name, _ in reservation.lines:
                line = (key, name)
                outage.spent[line] = outage.spent.get(line, 0) + actual
                if reservation.outage is outage:
                    outage.used[line] = outage.used.get(line, 0) + actual - reservation.held
        self._journal_settle(reservation, actual)

    def _journal_settle(self, reservation: SharedReservation, actual: int) -> None:
        self._seq += 1
        op = _Op(self._seq, self._now_ms(), reservation.id, reservation.held, actual, ())
        op.lines = reservation.lines
        self._journal.append(op)
        if self._synced:
            self._wake.set()

    async def flush(self) -> None:
        """Send every journaled settle now (the sender does it in the background)."""
        if not self.synced:
            return
        try:
            async with self._send_lock:
                await self._drain()
        except SharedStateDown:
            self._lost("settle")

    async def _drain(self) -> None:
        """Send the journal from the first settle not yet applied, in order (the caller
        holds the send lock). Stops when the state is lost meanwhile."""
        while self._synced or self._syncing:
            first = self._journal[0].seq if self._journal else self._seq + 1
            start = max(0, self._sent + 1 - first)
            end = min(len(self._journal), start + BATCH)
            batch = [self._journal[i] for i in range(start, end)]
            if not batch:
                self._prune()
                return
            if await self._apply(batch):
                self._sent = batch[-1].seq

    async def _apply(self, batch: Sequence[_Op]) -> bool:
        """One batch; False when it must be sent again (a period was seeded meanwhile, or
        Redis lost what this replica applied: then everything is resent from the start)."""
        current = set(self._keys(self._rules.today()))
        hashes: dict[str, int] = {}
        for op in batch:
            for key, _, _, _ in op.lines:
                hashes.setdefault(key, len(hashes) + 1)
        args: list[Any] = [self._now_ms(), self._shared.replica_id, len(hashes)]
        for key in hashes:
            args += [1 if key in current else 0, self._seeds.get(key, "")]
        args.append(len(batch))
        for op in batch:
            args += [op.seq, op.t_ms, op.id, op.held, op.actual, len(op.lines)]
            for key, _, name, limit in op.lines:
                args += [hashes[key], name, limit]
        keys = [self._res_key, self._lease_key, *hashes]
        result = await self._shared.run(self._apply_script, keys, args)
        status = _text(result[0])
        names = list(hashes)
        if status == "unseeded":
            if not await self._seed(names[int(result[1]) - 1]):
                raise SharedStateDown("the ledger cannot be read to seed a period")
            return False
        if status == "reseeded":
            self._reseeded(names[int(result[1]) - 1], _text(result[2]))
            return False
        for key, seed in zip(names, result[1], strict=True):
            if seed:
                self._seeds[key] = _text(seed)
        for h, name, level, spent in result[2]:
            self._alert(names[int(h) - 1], _text(name), int(level), int(spent))
        for h, name, spent, held in result[3]:
            self._view.setdefault(names[int(h) - 1], {})[_text(name)] = (int(spent), int(held))
        return True

    def _alert(self, key: str, name: str, level: int, spent: int) -> None:
        period = DAY if ":d:" in key else MONTH
        limit = self._rules.limit(period, name)
        if limit is not None:
            self._alerter.alert(name, level, from_nano(spent), limit, period, self._rules.today())

    def _prune(self) -> None:
        """Forget settles that are applied and too old for any future seed's cut."""
        oldest = self._now_ms() - self._keep_ms
        journal = self._journal
        while journal and journal[0].seq <= self._sent and journal[0].t_ms < oldest:
            journal.popleft()

    # -- seeds and reconciliation ----------------------------------------------------------

    def _note_seed(self, key: str, seed: str) -> None:
        known = self._seeds.get(key)
        if not seed or known == seed:
            return
        if known is not None:
            self._reseeded(key, seed)
        else:
            self._seeds[key] = seed

    def _reseeded(self, key: str, seed: str) -> None:
        """The hash is not the one this replica applied settles to: Redis lost it. Every
        journaled settle is sent again (the new seed's cut decides which count) and the
        reservations in flight are held again."""
        log.warning("budgets: %s was seeded again; resending this replica's settles", key)
        if seed:
            self._seeds[key] = seed
        else:
            self._seeds.pop(key, None)
        self._sent = 0
        for reservation in self._open.values():
            reservation.in_redis = False
        self._lost("Redis came back empty")

    async def _seed(self, key: str) -> bool:
        """Seed a current period from the ledger, once per replica at a time."""
        task = self._seeding.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._seed_once(key))
            self._seeding[key] = task
            task.add_done_callback(lambda _: self._seeding.pop(key, None))
        try:
            await asyncio.shield(task)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("budgets: cannot seed %s from the ledger (%s)", key, type(exc).__name__)
            return False
        return True

    async def _seed_once(self, key: str) -> str:
        present = await self._shared.call("HGET", key, "seed")
        if present:  # seeded already (the usual case): no ledger read at all
            return _text(present)
        period = DAY if ":d:" in key else MONTH
        now_ms = self._now_ms()
        cut_ms = now_ms - self._lag_ms
        cut = datetime.fromtimestamp(cut_ms / 1000, UTC)
        spend = await ledger_spend(self._ledger, self._rules, period, cut)
        amounts = {name: to_nano(usd(value)) for name, value in spend.items() if value > 0}
        ttl_ms = int((self._rules.seconds_until(period) + KEEP_AFTER_PERIOD_S) * 1000)
        args: list[Any] = [random_hex()[:16], cut_ms, ttl_ms, len(amounts)]
        for name, value in amounts.items():
            args += [name, value]
        created, seed, _ = await self._shared.run(self._seed_script, [key], args)
        if int(created):
            log.info("budgets: %s seeded from the ledger (%d budgets)", key, len(amounts))
        return _text(seed)

    async def sync(self) -> None:
        """Reconcile with Redis (at start and whenever it comes back): seed the current
        periods if it has nothing, learn its numbers, hold the calls still in flight, send
        the journal; then use Redis again. Runs once at a time; Redis failing midway leaves
        the replica on its local share, and the next return (or refresh) runs it again."""
        async with self._sync_lock:
            try:
                await self._sync()
            except SharedStateDown:
                self._lost("sync")

    async def _sync(self) -> None:
        today = self._rules.today()
        day_key, month_key = self._keys(today)
        for key in (day_key, month_key) if self._rules.monthly else (day_key,):
            if not await self._seed(key):
                return
        self._syncing = True
        try:
            await self._refresh(day_key, month_key)
            async with self._send_lock:
                for _ in range(SYNC_ROUNDS):
                    waiting = [r for r in self._open.values() if not r.in_redis]
                    if waiting:
                        await self._hold(waiting, day_key, month_key)
                    await self._drain()
                    # The view the next outage's shares are taken from: with this replica's
                    # holds and settles in it.
                    await self._refresh(day_key, month_key)
                    if self._sent == self._seq and all(r.in_redis for r in self._open.values()):
                        break
                # Nothing awaited from the last check to here: no settle or local reservation
                # slips in between. Under load that never lets the check pass, what is left
                # is sent by the sender and held by a task: a hold may then come after its
                # own settle and stay until its lease ends (too much held, never too little).
                left = [r for r in self._open.values() if not r.in_redis]
                was = self._outage
                self._outage = None
                # A reserve counts only as the Redis of now holds it: the one known before
                # may be on a Redis that lost its state since, and part of it was spent in
                # the outage. Until STANDBY sizes it again, a new outage has none.
                self._reserves = {}
                self._reserves_until = -math.inf
                self._epoch += 1
                self._synced = True
                self._wake.set()
        finally:
            self._syncing = False
        if left:
            await self._hold(left, day_key, month_key)
        await self._standby(day_key, month_key)
        if was is not None:
            log.warning("budgets: shared state reconciled; Redis decides again")

    async def _hold(self, waiting: list[SharedReservation], day_key: str, month_key: str) -> None:
        args: list[Any] = [0]
        count = 0
        for reservation in waiting:
            lines = [(1 if k == day_key else 2, n) for k, _, n, _ in reservation.lines]
            if any(k not in (day_key, month_key) for k, _, _, _ in reservation.lines):
                reservation.in_redis = True  # an earlier period's: nothing to hold now
                continue
            args += [reservation.id, reservation.held, reservation.expires_ms, len(lines)]
            for index, name in lines:
                args += [index, name]
            count += 1
        args[0] = count
        if count:
            keys = [day_key, month_key, self._res_key, self._lease_key]
            await self._shared.run(self._hold_script, keys, args)
        for reservation in waiting:
            reservation.in_redis = True

    async def _standby(self, day_key: str, month_key: str) -> None:
        """Size this replica's outage reserve on every budget again and renew its lease.

        One at a time. The replica counts on a new size only once the answer is back, and
        Redis never shrinks the reserve below what the replica counted on when it sent the
        script: an answer lost to an outage cannot leave it counting on money Redis has
        given back to the others."""
        lines = [
            (index, name, to_nano(limit))
            for index, period in ((1, DAY), (2, MONTH))
            if period == DAY or self._rules.monthly
            for name, limit in sorted(self._rules.limits(period).items())
        ]
        smallest = max(self._largest_calls)
        self._largest_calls.append(0)
        if not lines or not (smallest or self._reserve_on_redis):
            return  # no paid call yet: no idea what a reserve must cover
        if not smallest:  # idle for a while: a reserve would only be in the others' way
            smallest = max(limit for _, _, limit in lines) + 1
        async with self._standby_lock:
            epoch = self._epoch
            sent = self._clock.monotonic()
            args: list[Any] = [
                self._now_ms(),
                self._shared.replica_id,
                self._now_ms() + int(OUTAGE_RESERVE_LEASE_S * 1000),
                repr(self._outage_share),
                max(1, self._shared.live_replicas),
                smallest,
                len(lines),
            ]
            for index, name, limit in lines:
                key = day_key if index == 1 else month_key
                args += [index, name, limit, self._reserves.get(key, {}).get(name, 0)]
            keys = [day_key, month_key, self._res_key, self._lease_key]
            draws: dict[tuple[str, str], int] = {}
            self._standby_draws = draws
            try:
                result = await self._shared.run(self._standby_script, keys, args)
            finally:
                self._standby_draws = None
            kept = False
            for (index, name, _), values in zip(lines, result, strict=True):
                spent, held, reserve, size = (int(v) for v in values)
                key = day_key if index == 1 else month_key
                self._view.setdefault(key, {})[name] = (spent, held)
                kept = kept or reserve > 0
                if epoch == self._epoch:
                    counted = max(0, size - draws.get((key, name), 0))
                    self._reserves.setdefault(key, {})[name] = counted
            self._reserve_on_redis = kept
            if epoch == self._epoch:
                self._reserves_until = sent + OUTAGE_RESERVE_LEASE_S - OUTAGE_RESERVE_MARGIN_S

    async def _refresh(self, day_key: str, month_key: str) -> None:
        """The current periods as Redis has them (expired reservations released first)."""
        keys = [day_key, month_key, self._res_key, self._lease_key]
        day, month = await self._shared.run(self._view_script, keys, [self._now_ms()])
        for key, flat in ((day_key, day), (month_key, month)):
            fields = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
            seed = _text(fields.get("seed", b""))
            if not seed and key in self._seeds:
                self._reseeded(key, "")
                raise SharedStateDown("Redis came back empty")
            self._note_seed(key, seed)
            lines: dict[str, tuple[int, int]] = {}
            for name, value in fields.items():
                kind, _, budget = name.partition(":")
                if kind in ("s", "r") and budget:
                    spent, held = lines.get(budget, (0, 0))
                    lines[budget] = (int(value), held) if kind == "s" else (spent, int(value))
            self._view[key] = lines

    # -- reads -----------------------------------------------------------------------------

    async def lines(self, *, caller: str | None) -> list[dict[str, object]]:
        """/v1/budgets: Redis' numbers (refreshed now when it answers), plus, while it is
        away, what this replica spent since it last saw them."""
        today = self._rules.today()
        keys = self._keys(today)
        if self.synced:
            await self.flush()  # this replica's own settles first: a caller reads its writes
        if self.synced:
            try:
                await self._refresh(*keys)
            except SharedStateDown:
                self._lost("read")
        out: list[dict[str, object]] = []
        for key, period in zip(keys, (DAY, MONTH), strict=True):
            resets_in = self._rules.seconds_until(period)
            for name, limit in sorted(self._rules.limits(period).items()):
                if visible(name, caller):
                    spent, held = self._numbers(key, name)
                    out.append(
                        budget_line(
                            name, period, limit, from_nano(spent), from_nano(held), today, resets_in
                        )
                    )
        return out

    def _numbers(self, key: str, name: str) -> tuple[int, int]:
        spent, held = self._view.get(key, {}).get(name, (0, 0))
        outage = self._outage
        if outage is not None:
            spent += outage.spent.get((key, name), 0)
            held += sum(
                r.held
                for r in self._open.values()
                if not r.in_redis and any(k == key and n == name for k, _, n, _ in r.lines)
            )
        return spent, held

    def _gauge_view(self) -> GaugeView:
        day_key, month_key = self._keys(self._rules.today())
        view: dict[str, tuple[dict[str, Decimal], dict[str, Decimal]]] = {}
        for key, period in ((day_key, DAY), (month_key, MONTH)):
            numbers = {name: self._numbers(key, name) for name in self._view.get(key, {})}
            view[period] = (
                {n: from_nano(s) for n, (s, _) in numbers.items()},
                {n: from_nano(h) for n, (_, h) in numbers.items()},
            )
        return view

    # -- life cycle ------------------------------------------------------------------------

    async def rebuild(self, ledger: UsageLedger) -> None:
        """At start: reconcile with Redis if it answers; if not, the ledger's spend is the
        last known state (and this replica assumes it is alone until it sees Redis)."""
        await self.sync()  # also when the first heartbeat was too slow: Redis may answer now
        if not self._synced:
            today = self._rules.today()
            for key, period in zip(self._keys(today), (DAY, MONTH), strict=True):
                try:
                    spend = await ledger_spend(ledger, self._rules, period)
                except (SQLAlchemyError, OSError):
                    continue
                self._view[key] = {n: (to_nano(usd(v)), 0) for n, v in spend.items()}
            # Not seen Redis yet: no outage reserve, so paid calls wait for Redis (free
            # providers still serve); this view is what /v1/budgets shows meanwhile.
            self._outage = None
        self.start()

    def start(self) -> None:
        """The journal's sender and the periodic refresh (also retries `sync`)."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._sender()), loop.create_task(self._refresher())]

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.tick()
            except Exception:
                log.exception("budgets: refresh failed")

    async def tick(self) -> None:
        """One refresh (every REDIS_HEARTBEAT_S): Redis' numbers, this replica's outage
        reserve sized again; or notice Redis is gone; or reconcile once it is back."""
        try:
            if self._synced and not self._shared.up:
                self._lost("Redis unreachable")  # the heartbeat found out first
            elif self.synced:
                keys = self._keys(self._rules.today())
                await self._refresh(*keys)
                await self._standby(*keys)
                self._wake.set()  # anything journaled while a send was failing
            elif self._shared.up:
                await self.sync()
        except SharedStateDown:
            self._lost("refresh")

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._kick.add(task)
        task.add_done_callback(self._kick.discard)

    async def aclose(self) -> None:
        """Send what is journaled (bounded by Redis' timeouts), stop the tasks."""
        await self.flush()
        for task in [*self._tasks, *self._kick]:
            task.cancel()
        for task in [*self._tasks, *self._kick]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._alerter.aclose()


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
