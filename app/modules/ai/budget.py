"""Daily and monthly budget guards, exact under concurrency.

Before a paid call the service reserves its worst-case cost against every budget that
applies (the provider's, the total, the caller's; for the day and for the month); after it,
the reservation is settled to the real cost and the rest released (also on failure). Spend is
kept per day and per month in BUDGET_TIMEZONE, from the injected clock, and rebuilt from the
ledger at start.

Where the numbers live is a `BudgetStore`: `BudgetGuard` below keeps them in this process
(the embedded default: reserving does no I/O, and on one event loop no two requests
interleave inside it, so concurrent requests can never together pass a budget);
`budget_store.RedisBudgets` keeps them on Redis for several processes. Both share the rules
(`BudgetRules`: which budgets apply, when a period resets) and the alerts (`Alerter`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

import httpx

from app.core.clock import Clock
from app.core.masking import mask_url
from app.core.settings import ProviderName, Settings
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.usage import UsageLedger

log = logging.getLogger("app.ai.budget")

ALERT_LEVELS = (80, 90, 100)
TOTAL = "total"
CALLER_PREFIX = "caller:"
DAY = "day"
MONTH = "month"
# Retry-After when only money held by calls still in flight blocks a request (what is spent
# leaves room for it). A reservation is the call's worst case and is released the moment the
# call ends, settled to a real cost that is mostly far below it; calls end within seconds
# (AI_REQUEST_DEADLINE_S at most). A short constant, not the time to midnight: a client told
# to come back tomorrow while most of the budget is left would stop for no reason. A client
# that returns too early gets another short answer, or the true wait once money is spent.
HELD_RETRY_AFTER_S = 2.0
NANO = 10**9
# {period: (spent per budget, held per budget)}, read by the gauges from local memory.
GaugeView = Mapping[str, tuple[Mapping[str, Decimal], Mapping[str, Decimal]]]


def usd(value: float) -> Decimal:
    """Money as Decimal, rounded to a billionth of a dollar, so sums do not drift."""
    return Decimal(str(round(value, 9)))


def to_nano(value: Decimal) -> int:
    """Whole billionths of a dollar: how money is kept on Redis (integers add exactly)."""
    return int(value * NANO)


def from_nano(value: int) -> Decimal:
    return Decimal(value).scaleb(-9)


def month_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


@dataclass(slots=True)
class Reservation:
    """Money held against budgets for one call; settled exactly once."""

    day: date
    budgets: tuple[str, ...]
    amount: Decimal
    settled: bool = False
    # The month (YYYY-MM) and the monthly budgets the same amount is held against.
    month: str = ""
    month_budgets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Blocked:
    """Which budget would be passed, and when it is worth asking again.

    `held` False: what is already spent leaves no room for this call's worst case; it may
    pass again only at the period's reset (`retry_after_s` runs to it: midnight for a daily
    budget, the first of the next month for a monthly cap). `held` True: what is spent leaves
    room, and only money held by calls still in flight is in the way; those release it as
    they end, so `retry_after_s` is short (HELD_RETRY_AFTER_S)."""

    budget: str
    retry_after_s: float
    held: bool = False
    period: str = DAY


class BudgetStore(Protocol):
    """Where budgets live: in this process (BudgetGuard) or on Redis (RedisBudgets)."""

    async def acquire(
        self, provider: ProviderName, caller: str, worst_case_usd: float, *, lease_s: float
    ) -> Reservation | Blocked:
        """Hold the worst case against every budget that applies, or say which would pass.
        `lease_s`: how long the call may take (its deadline); a shared store drops the hold
        after it (plus a margin) if the call's settle never comes (a killed replica)."""
        ...

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the held amount by the real cost; idempotent, never blocks."""
        ...

    def seconds_until_reset(self) -> float: ...

    @property
    def state(self) -> str:
        """Where this replica's budget numbers come from now (/v1/budgets `store`)."""
        ...

    async def lines(self, *, caller: str | None) -> list[dict[str, object]]:
        """Every budget visible to `caller` (None: all), both periods, for /v1/budgets."""
        ...

    async def rebuild(self, ledger: UsageLedger) -> None:
        """At start: spend so far this day and month, from the ledger."""
        ...

    async def aclose(self) -> None: ...


class BudgetRules:
    """What the settings say: each period's limits, which apply to a call, when a period
    resets. Pure (no state but the clock), shared by both stores."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.clock = clock
        self.zone = ZoneInfo(settings.budget_timezone)
        daily: dict[str, Decimal | None] = {
            name.value: _limit(settings.daily_budget(name)) for name in ProviderName
        }
        daily[TOTAL] = _limit(settings.daily_budget_usd_total)
        monthly: dict[str, Decimal | None] = {
            name.value: _limit(settings.monthly_budget(name)) for name in ProviderName
        }
        monthly[TOTAL] = _limit(settings.monthly_budget_usd_total)
        self._limits = {DAY: daily, MONTH: monthly}
        self._per_caller = {
            DAY: _limit(settings.daily_budget_usd_per_caller),
            MONTH: _limit(settings.monthly_budget_usd_per_caller),
        }
        self.callers = tuple(settings.gateway_api_keys)
        self.monthly = any(v is not None for v in monthly.values()) or (
            self._per_caller[MONTH] is not None
        )
        # The shared budgets of each provider, per period, worked out once.
        self._shared: dict[str, dict[ProviderName, tuple[tuple[str, Decimal], ...]]] = {
            period: {
                provider: tuple(
                    (name, limit)
                    for name in (provider.value, TOTAL)
                    if (limit := self._limits[period][name]) is not None
                )
                for provider in ProviderName
            }
            for period in (DAY, MONTH)
        }

    def today(self) -> date:
        return self.clock.now().astimezone(self.zone).date()

    def lines(self, period: str, provider: ProviderName, caller: str) -> list[tuple[str, Decimal]]:
        """The budgets of `period` a call of `provider` by `caller` is held against."""
        found = list(self._shared[period][provider])
        per_caller = self._per_caller[period]
        if per_caller is not None:
            found.append((CALLER_PREFIX + caller, per_caller))
        return found

    def limits(self, period: str) -> dict[str, Decimal]:
        limits = {k: v for k, v in self._limits[period].items() if v is not None}
        per_caller = self._per_caller[period]
        if per_caller is not None:
            for caller in self.callers:
                limits[CALLER_PREFIX + caller] = per_caller
        return limits

    def limit(self, period: str, name: str) -> Decimal | None:
        if name.startswith(CALLER_PREFIX):
            return self._per_caller[period]
        return self._limits[period].get(name)

    def start(self, period: str, day: date) -> datetime:
        """When the period holding `day` began, in the budget time zone."""
        first = day if period == DAY else day.replace(day=1)
        return datetime.combine(first, time(), tzinfo=self.zone)

    def seconds_until(self, period: str) -> float:
        """Until the current day (or month) ends in the budget time zone; at least 1 s."""
        now = self.clock.now().astimezone(self.zone)
        if period == DAY:
            end = now.date() + timedelta(days=1)
        else:
            end = (now.date().replace(day=28) + timedelta(days=4)).replace(day=1)
        reset = datetime.combine(end, time(), tzinfo=self.zone)
        return max(1.0, (reset - now).total_seconds())


def visible(name: str, caller: str | None) -> bool:
    """A caller sees the shared budgets and its own, never another caller's."""
    return caller is None or not name.startswith(CALLER_PREFIX) or name == CALLER_PREFIX + caller


def budget_line(
    name: str,
    period: str,
    limit: Decimal,
    spent: Decimal,
    reserved: Decimal,
    today: date,
    resets_in_s: float,
) -> dict[str, object]:
    """One line of /v1/budgets (the same shape from either store)."""
    return {
        "budget": name,
        "period": period,
        "limit_usd": float(limit),
        "spent_usd": float(spent),
        "reserved_usd": float(reserved),
        "remaining_usd": float(max(Decimal(0), limit - spent - reserved)),
        "day": today.isoformat(),
        "month": month_of(today),
        "resets_in_s": round(resets_in_s),
    }


class Alerter:
    """Budget alerts at 80/90/100 %: a log line, a metric, and the webhook if configured.
    Which levels are due is the store's business (once per budget and period)."""

    def __init__(self, settings: Settings, metrics: AIMetrics) -> None:
        self._webhook = settings.budget_alert_webhook_url
        self._webhook_timeout = settings.budget_alert_webhook_timeout_s
        self._metrics = metrics
        self._background: set[asyncio.Task[None]] = set()

    def alert(
        self, budget: str, level: int, spent: Decimal, limit: Decimal, period: str, day: date
    ) -> None:
        log.warning(
            "budget alert budget=%s level=%d%% spent_usd=%s limit_usd=%s period=%s",
            budget,
            level,
            spent,
            limit,
            period,
        )
        attributes = {"budget": budget, "level": str(level)}
        if period != DAY:  # the daily series keep the labels they always had
            attributes["period"] = period
        self._metrics.budget_alerts.add(1, attributes)
        if self._webhook:
            payload: dict[str, object] = {
                "event": "budget_alert",
                "budget": budget,
                "level_percent": level,
                "spent_usd": float(spent),
                "limit_usd": float(limit),
                "day": day.isoformat(),
                "period": period,
            }
            if period == MONTH:
                payload["month"] = month_of(day)
            task = asyncio.get_running_loop().create_task(self._post(payload))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _post(self, payload: dict[str, object]) -> None:
        """Fire and forget, bounded in time; a failing webhook is logged, never raised.

        Sent straight to a transport (no proxies or netrc from the environment either):
        httpx's client logs every request URL at INFO, and a webhook URL carries its token."""
        assert self._webhook is not None
        failure: str | None = None
        try:
            async with (
                asyncio.timeout(self._webhook_timeout),
                httpx.AsyncHTTPTransport(retries=0) as transport,
            ):
                request = httpx.Request("POST", self._webhook, json=payload)
                response = await transport.handle_async_request(request)
                await response.aclose()
            if not response.is_success:
                failure = f"HTTP {response.status_code}"
        except (httpx.HTTPError, httpx.InvalidURL, OSError, TimeoutError) as exc:
            failure = type(exc).__name__
        if failure is not None:
            log.error(
                "budget alert webhook failed: %s url=%s",
                failure,
                mask_url(self._webhook, hide_path=True),
            )

    async def aclose(self) -> None:
        """Let alert webhooks in flight finish (each is bounded by its timeout)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def levels_crossed(before: int, spent: Decimal, limit: Decimal) -> list[int]:
    """The alert levels reached now and not yet announced (`before`: the highest one was)."""
    if not limit:
        return []
    share = spent / limit * 100
    return [level for level in ALERT_LEVELS if level > before and share >= level]


@dataclass(slots=True)
class _Period:
    kind: str
    key: str  # the day (ISO date) or the month (YYYY-MM)
    spent: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    reserved: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    alerted: dict[str, int] = field(default_factory=dict)


class BudgetGuard:
    """The in-process store: one process, state in memory, no I/O on the request path."""

    def __init__(self, settings: Settings, clock: Clock, metrics: AIMetrics) -> None:
        self._rules = BudgetRules(settings, clock)
        self._alerter = Alerter(settings, metrics)
        self._date = self._rules.today()
        self._today = _Period(DAY, self._date.isoformat())
        self._month = _Period(MONTH, month_of(self._date))
        register_gauges(metrics, self._rules, self._gauge_view)

    @property
    def rules(self) -> BudgetRules:
        return self._rules

    def limits(self) -> dict[str, Decimal]:
        return self._rules.limits(DAY)

    def _current(self) -> tuple[_Period, _Period]:
        today = self._rules.today()
        if today != self._date:
            self._date = today
            self._today = _Period(DAY, today.isoformat())
            month = month_of(today)
            if month != self._month.key:
                self._month = _Period(MONTH, month)
        return self._today, self._month

    def seconds_until_reset(self) -> float:
        return self._rules.seconds_until(DAY)

    @property
    def state(self) -> str:
        return "in-process"

    def reserve(
        self, provider: ProviderName, caller: str, worst_case_usd: float
    ) -> Reservation | Blocked:
        """Hold `worst_case_usd` against every budget that applies, or say which would pass.

        A free call (worst case 0) is never blocked and holds nothing. A budget truly spent
        for this call wins over one only held by calls in flight, and a month truly spent
        over a day: the caller is told the longest true wait, never a short one that cannot
        help."""
        day, month = self._current()
        amount = usd(worst_case_usd)
        if amount <= 0:
            return Reservation(self._date, (), Decimal(0))
        rules = self._rules
        daily = rules.lines(DAY, provider, caller)
        monthly = rules.lines(MONTH, provider, caller) if rules.monthly else []
        spent_day: str | None = None
        held: tuple[str, str] | None = None
        for name, limit in daily:
            if day.spent[name] + amount > limit:  # truly spent, whatever is in flight
                spent_day = spent_day or name
            elif held is None and day.spent[name] + day.reserved[name] + amount > limit:
                held = (name, DAY)
        for name, limit in monthly:
            if month.spent[name] + amount > limit:
                return Blocked(name, rules.seconds_until(MONTH), period=MONTH)
            if held is None and month.spent[name] + month.reserved[name] + amount > limit:
                held = (name, MONTH)
        if spent_day is not None:
            return Blocked(spent_day, rules.seconds_until(DAY))
        if held is not None:
            name, period = held
            wait = min(HELD_RETRY_AFTER_S, rules.seconds_until(period))
            return Blocked(name, wait, held=True, period=period)
        for name, _ in daily:
            day.reserved[name] += amount
        for name, _ in monthly:
            month.reserved[name] += amount
        return Reservation(
            self._date,
            tuple(name for name, _ in daily),
            amount,
            month=month.key,
            month_budgets=tuple(name for name, _ in monthly),
        )

    async def acquire(
        self, provider: ProviderName, caller: str, worst_case_usd: float, *, lease_s: float
    ) -> Reservation | Blocked:
        """`reserve`, for the BudgetStore interface (no I/O; a lease means nothing here: a
        process that dies takes its reservations with it)."""
        return self.reserve(provider, caller, worst_case_usd)

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the held amount by the real cost (0 when the call failed)."""
        if reservation.settled:
            return
        reservation.settled = True
        day, month = self._current()
        actual = usd(actual_usd)
        if reservation.day == self._date:  # yesterday's reservation: its totals are gone
            self._book(day, reservation.budgets, reservation.amount, actual)
        if reservation.month_budgets and reservation.month == month.key:
            self._book(month, reservation.month_budgets, reservation.amount, actual)

    def _book(
        self, period: _Period, budgets: Iterable[str], amount: Decimal, actual: Decimal
    ) -> None:
        for name in budgets:
            period.reserved[name] -= amount
            period.spent[name] += actual
            limit = self._rules.limit(period.kind, name)
            if limit is None:
                continue
            due = levels_crossed(period.alerted.get(name, 0), period.spent[name], limit)
            for level in due:
                self._alerter.alert(name, level, period.spent[name], limit, period.kind, self._date)
            if due:
                period.alerted[name] = due[-1]

    def restore(self, spent: Mapping[str, float], month: Mapping[str, float] | None = None) -> None:
        """Spend so far today (and this month) per budget, as rebuilt from the ledger."""
        day, this_month = self._current()
        for name, value in spent.items():
            day.spent[name] = usd(value)
        for name, value in (month or {}).items():
            this_month.spent[name] = usd(value)

    async def rebuild(self, ledger: UsageLedger) -> None:
        await restore_budgets(self, ledger)

    def spent(self, budget: str, period: str = DAY) -> Decimal:
        day, month = self._current()
        return (day if period == DAY else month).spent[budget]

    def snapshot(self, *, caller: str | None = None) -> list[dict[str, object]]:
        """Every configured budget now, daily then monthly: limit, spent, held by calls in
        flight, remaining, reset.

        With `caller`, only the budgets that caller may see: the shared ones (providers,
        total) and its own per-caller budget, never another caller's name or spend."""
        day, month = self._current()
        lines: list[dict[str, object]] = []
        for period in (day, month):
            resets_in = self._rules.seconds_until(period.kind)
            for name, limit in sorted(self._rules.limits(period.kind).items()):
                if visible(name, caller):
                    lines.append(
                        budget_line(
                            name,
                            period.kind,
                            limit,
                            period.spent[name],
                            period.reserved[name],
                            self._date,
                            resets_in,
                        )
                    )
        return lines

    async def lines(self, *, caller: str | None) -> list[dict[str, object]]:
        return self.snapshot(caller=caller)

    def _gauge_view(self) -> GaugeView:
        day, month = self._current()
        return {DAY: (day.spent, day.reserved), MONTH: (month.spent, month.reserved)}

    async def aclose(self) -> None:
        """Let alert webhooks in flight finish (each is bounded by its timeout)."""
        await self._alerter.aclose()


def register_gauges(metrics: AIMetrics, rules: BudgetRules, view: Callable[[], GaugeView]) -> None:
    """Spend, holds and limits per budget: the daily series as they always were, the
    monthly ones beside them. `view()` gives {period: (spent, reserved)} from local memory."""

    def series(period: str, index: int) -> Callable[[], list[tuple[float, dict[str, str]]]]:
        def read() -> list[tuple[float, dict[str, str]]]:
            numbers = view()[period][index]
            return [(float(v), {"budget": k}) for k, v in numbers.items()]

        return read

    def limits(period: str) -> Callable[[], list[tuple[float, dict[str, str]]]]:
        return lambda: [(float(v), {"budget": k}) for k, v in rules.limits(period).items()]

    for period, prefix in ((DAY, "ai_budget"), (MONTH, "ai_budget_monthly")):
        span = "today" if period == DAY else "this month"
        metrics.gauge(
            f"{prefix}_spent_usd", "", f"Spend so far {span} per budget, in USD", series(period, 0)
        )
        metrics.gauge(
            f"{prefix}_reserved_usd",
            "",
            "USD held per budget by calls (and streams) still in flight"
            + ("" if period == DAY else ", against the monthly caps"),
            series(period, 1),
        )
        metrics.gauge(
            f"{prefix}_limit_usd",
            "",
            f"{'Daily' if period == DAY else 'Monthly'} limit per budget, in USD",
            limits(period),
        )


def _limit(value: float | None) -> Decimal | None:
    return None if value is None else usd(value)


async def ledger_spend(
    ledger: UsageLedger, rules: BudgetRules, period: str, until: datetime | None = None
) -> dict[str, float]:
    """The period's spend per budget name (providers, total, callers) read from the ledger,
    up to `until` (None: everything written so far)."""
    spend = await ledger.spend_between(rules.start(period, rules.today()), until)
    restored = dict(spend["providers"])
    restored[TOTAL] = sum(spend["providers"].values())
    for caller, value in spend["callers"].items():
        restored[CALLER_PREFIX + caller] = value
    return restored


async def restore_budgets(budget: BudgetGuard, ledger: UsageLedger) -> None:
    """Today's and this month's spend per provider, in total and per caller, read back
    from the ledger."""
    rules = budget.rules
    today = await ledger_spend(ledger, rules, DAY)
    month = await ledger_spend(ledger, rules, MONTH) if rules.monthly else {}
    budget.restore(today, month)
    if any(today.values()):
        log.info("budgets restored from the ledger total_usd=%.6f", today[TOTAL])
