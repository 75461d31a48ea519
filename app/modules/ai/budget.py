"""Daily budget guards, exact under concurrency.

Before a paid call the service reserves its worst-case cost against every budget that
applies (the provider's, the total, the caller's); after it, the reservation is settled to the
real cost and the rest released (also on failure). Reserving is synchronous: on one event
loop no two requests interleave inside it, so concurrent requests can never together pass a
budget. Spend is kept per day in BUDGET_TIMEZONE, from the injected clock, and rebuilt from
the ledger at start.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
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
# Retry-After when only money held by calls still in flight blocks a request (what is spent
# leaves room for it). A reservation is the call's worst case and is released the moment the
# call ends, settled to a real cost that is mostly far below it; calls end within seconds
# (AI_REQUEST_DEADLINE_S at most). A short constant, not the time to midnight: a client told
# to come back tomorrow while most of the budget is left would stop for no reason. A client
# that returns too early gets another short answer, or the true wait once money is spent.
HELD_RETRY_AFTER_S = 2.0


def usd(value: float) -> Decimal:
    """Money as Decimal, rounded to a billionth of a dollar, so sums do not drift."""
    return Decimal(str(round(value, 9)))


@dataclass(slots=True)
class Reservation:
    """Money held against budgets for one call; settled exactly once."""

    day: date
    budgets: tuple[str, ...]
    amount: Decimal
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Blocked:
    """Which budget would be passed, and when it is worth asking again.

    `held` False: what is already spent leaves no room for this call's worst case; it may
    pass again only at the day's reset (`retry_after_s` runs to it). `held` True: what is
    spent leaves room, and only money held by calls still in flight is in the way; those
    release it as they end, so `retry_after_s` is short (HELD_RETRY_AFTER_S)."""

    budget: str
    retry_after_s: float
    held: bool = False


@dataclass(slots=True)
class _Day:
    day: date
    spent: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    reserved: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    alerted: set[tuple[str, int]] = field(default_factory=set)


class BudgetGuard:
    def __init__(self, settings: Settings, clock: Clock, metrics: AIMetrics) -> None:
        self._clock = clock
        self._zone = ZoneInfo(settings.budget_timezone)
        self._limits: dict[str, Decimal | None] = {
            name.value: _limit(settings.daily_budget(name)) for name in ProviderName
        }
        self._limits[TOTAL] = _limit(settings.daily_budget_usd_total)
        self._per_caller = _limit(settings.daily_budget_usd_per_caller)
        self._callers = tuple(settings.gateway_api_keys)
        self._webhook = settings.budget_alert_webhook_url
        self._webhook_timeout = settings.budget_alert_webhook_timeout_s
        self._metrics = metrics
        self._today = _Day(self._day())
        self._background: set[asyncio.Task[None]] = set()
        metrics.gauge(
            "ai_budget_spent_usd",
            "",
            "Spend so far today per budget, in USD",
            lambda: [(float(v), {"budget": k}) for k, v in self._current().spent.items()],
        )
        metrics.gauge(
            "ai_budget_reserved_usd",
            "",
            "USD held per budget by calls (and streams) still in flight",
            lambda: [(float(v), {"budget": k}) for k, v in self._current().reserved.items()],
        )
        metrics.gauge(
            "ai_budget_limit_usd",
            "",
            "Daily limit per budget, in USD",
            lambda: [(float(v), {"budget": k}) for k, v in self.limits().items()],
        )

    def limits(self) -> dict[str, Decimal]:
        limits = {k: v for k, v in self._limits.items() if v is not None}
        if self._per_caller is not None:
            for caller in self._callers:
                limits[CALLER_PREFIX + caller] = self._per_caller
        return limits

    def _day(self) -> date:
        return self._clock.now().astimezone(self._zone).date()

    def _current(self) -> _Day:
        today = self._day()
        if today != self._today.day:
            self._today = _Day(today)
        return self._today

    def seconds_until_reset(self) -> float:
        now = self._clock.now().astimezone(self._zone)
        midnight = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=self._zone)
        return max(1.0, (midnight - now).total_seconds())

    def _budgets_for(self, provider: ProviderName, caller: str) -> list[tuple[str, Decimal]]:
        found: list[tuple[str, Decimal]] = []
        for name in (provider.value, TOTAL):
            limit = self._limits[name]
            if limit is not None:
                found.append((name, limit))
        if self._per_caller is not None:
            found.append((CALLER_PREFIX + caller, self._per_caller))
        return found

    def reserve(
        self, provider: ProviderName, caller: str, worst_case_usd: float
    ) -> Reservation | Blocked:
        """Hold `worst_case_usd` against every budget that applies, or say which would pass.

        A free call (worst case 0) is never blocked and holds nothing. A budget truly spent
        for this call wins over one only held by calls in flight: the caller is told the
        longest true wait, never a short one that cannot help."""
        day = self._current()
        amount = usd(worst_case_usd)
        if amount <= 0:
            return Reservation(day.day, (), Decimal(0))
        budgets = self._budgets_for(provider, caller)
        held: str | None = None
        for name, limit in budgets:
            if day.spent[name] + amount > limit:  # truly spent, whatever is in flight
                return Blocked(name, self.seconds_until_reset())
            if held is None and day.spent[name] + day.reserved[name] + amount > limit:
                held = name
        if held is not None:
            return Blocked(held, min(HELD_RETRY_AFTER_S, self.seconds_until_reset()), held=True)
        for name, _ in budgets:
            day.reserved[name] += amount
        return Reservation(day.day, tuple(name for name, _ in budgets), amount)

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the held amount by the real cost (0 when the call failed)."""
        if reservation.settled:
            return
        reservation.settled = True
        day = self._current()
        if reservation.day != day.day:
            return  # yesterday's reservation: that day's totals are gone
        actual = usd(actual_usd)
        for name in reservation.budgets:
            day.reserved[name] -= reservation.amount
            day.spent[name] += actual
            self._check_alerts(day, name)

    def restore(self, spent: Mapping[str, float]) -> None:
        """Today's spend per budget, as rebuilt from the ledger at start."""
        day = self._current()
        for name, value in spent.items():
            day.spent[name] = usd(value)

    def spent(self, budget: str) -> Decimal:
        return self._current().spent[budget]

    def snapshot(self, *, caller: str | None = None) -> list[dict[str, object]]:
        """Every configured budget now: limit, spent, held by calls in flight, remaining.

        With `caller`, only the budgets that caller may see: the shared ones (providers,
        total) and its own per-caller budget, never another caller's name or spend."""
        day = self._current()
        resets_in = self.seconds_until_reset()
        limits = self.limits()
        if caller is not None:
            limits = {
                name: limit
                for name, limit in limits.items()
                if not name.startswith(CALLER_PREFIX) or name == CALLER_PREFIX + caller
            }
        return [
            {
                "budget": name,
                "limit_usd": float(limit),
                "spent_usd": float(day.spent[name]),
                "reserved_usd": float(day.reserved[name]),
                "remaining_usd": float(
                    max(Decimal(0), limit - day.spent[name] - day.reserved[name])
                ),
                "day": day.day.isoformat(),
                "resets_in_s": round(resets_in),
            }
            for name, limit in sorted(limits.items())
        ]

    def _check_alerts(self, day: _Day, name: str) -> None:
        limit = self.limits().get(name)
        if not limit:
            return
        share = day.spent[name] / limit * 100
        for level in ALERT_LEVELS:
            if share >= level and (name, level) not in day.alerted:
                day.alerted.add((name, level))
                self._alert(name, level, day.spent[name], limit)

    def _alert(self, budget: str, level: int, spent: Decimal, limit: Decimal) -> None:
        log.warning(
            "budget alert budget=%s level=%d%% spent_usd=%s limit_usd=%s",
            budget,
            level,
            spent,
            limit,
        )
        self._metrics.budget_alerts.add(1, {"budget": budget, "level": str(level)})
        if self._webhook:
            payload = {
                "event": "budget_alert",
                "budget": budget,
                "level_percent": level,
                "spent_usd": float(spent),
                "limit_usd": float(limit),
                "day": self._today.day.isoformat(),
            }
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


def _limit(value: float | None) -> Decimal | None:
    return None if value is None else usd(value)


async def restore_budgets(budget: BudgetGuard, ledger: UsageLedger) -> None:
    """Today's spend per provider, in total and per caller, read back from the ledger."""
    spend = await ledger.spend_today()
    restored = dict(spend["providers"])
    restored[TOTAL] = sum(spend["providers"].values())
    for caller, value in spend["callers"].items():
        restored[CALLER_PREFIX + caller] = value
    budget.restore(restored)
    if any(restored.values()):
        log.info("budgets restored from the ledger total_usd=%.6f", restored[TOTAL])
