"""The usage ledger: one row per upstream attempt and per cache hit, in a real database.

Rows are buffered and written in batches by a background task, off the request path. A
write that fails (database briefly down) keeps its rows and is retried with backoff; only
when the bounded buffer overflows are rows dropped, counted one by one in the metric and
logged once per burst (the first drop, then a count at most every DROP_LOG_INTERVAL_S and
when the buffer takes rows again). Closing the ledger (graceful shutdown) flushes
everything still buffered.

The background task is the only writer (close() writes only once it has stopped): two
writers would both insert the same buffered batch. Readers (`usage_today`) read the
database plus the rows still buffered, under the lock the writer holds from a batch's
insert to its removal from the buffer, so no row is counted twice or missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    false,
    func,
    insert,
    select,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.clock import Clock
from app.core.ids import random_hex
from app.core.settings import Settings
from app.modules.ai.errors import LedgerUnavailable
from app.modules.ai.metrics import AIMetrics

log = logging.getLogger("app.ai.ledger")

# While the buffer is full, drops are logged at most this often (with their count).
DROP_LOG_INTERVAL_S = 30.0

metadata = MetaData()

llm_usage_logs = Table(
    "llm_usage_logs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("request_id", String(64), nullable=False, index=True),
    Column("user_id", String(128), nullable=False, index=True),
    Column("service_name", String(64), nullable=False),
    Column("intent", String(32), nullable=True),
    Column("provider", String(32), nullable=False, index=True),
    Column("model", String(200), nullable=True),
    Column("endpoint", String(200), nullable=True),
    Column("status_code", Integer, nullable=True),
    Column("outcome", String(32), nullable=False),
    Column("error_type", String(32), nullable=True),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("total_tokens", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("duration_ms", Float, nullable=False, default=0.0),
    Column("cached", Boolean, nullable=False, default=False),
    # The model had no price of its own and was booked at its provider's worst known price
    # (AI_ALLOW_UNPRICED_MODELS); its cost_usd is an upper estimate, not the provider's bill.
    Column("price_estimated", Boolean, nullable=False, default=False, server_default=false()),
    # cost_usd is our estimate, not the upstream's token counts at the price: a try that was
    # sent but gave no answer (timed out, or the caller went away), booked at its estimated
    # input cost because the provider may bill the prompt it read; or a stream that ended
    # without the upstream's counts (migration 0003).
    Column("cost_estimated", Boolean, nullable=False, default=False, server_default=false()),
    Column("error_message", Text, nullable=True),
    Column("metadata", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)


@dataclass(slots=True)
class UsageRow:
    """One ledger row. `error_message` is ours (classified), never an upstream body."""

    request_id: str
    user_id: str
    service_name: str
    provider: str
    outcome: str
    created_at: datetime
    intent: str | None = None
    model: str | None = None
    endpoint: str | None = None
    status_code: int | None = None
    error_type: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    duration_ms: float = 0.0
    cached: bool = False
    error_message: str | None = None
    price_estimated: bool = False
    cost_estimated: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=random_hex)

    def values(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "request_id": self.request_id,
            "user_id": self.user_id,
            "service_name": self.service_name,
            "intent": self.intent,
            "provider": self.provider,
            "model": self.model,
            "endpoint": self.endpoint,
            "status_code": self.status_code,
            "outcome": self.outcome,
            "error_type": self.error_type,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": self.cost_usd,
            "duration_ms": round(self.duration_ms, 3),
            "cached": self.cached,
            "error_message": self.error_message,
            "price_estimated": self.price_estimated,
            "cost_estimated": self.cost_estimated,
            "metadata": self.metadata,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    """What readiness needs from the ledger: is the writer running, and is the buffer still
    below the point where rows are dropped (LEDGER_BUFFER_MAX_ROWS)?"""

    writer_alive: bool
    buffered_rows: int
    max_rows: int


class UsageLedger:
    def __init__(
        self, engine: AsyncEngine, settings: Settings, clock: Clock, metrics: AIMetrics
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._metrics = metrics
        self._batch = settings.ledger_batch_size
        self._interval = settings.ledger_flush_interval_s
        self._max_rows = settings.ledger_buffer_max_rows
        self._zone = ZoneInfo(settings.budget_timezone)
        self._buffer: deque[UsageRow] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failures = 0
        # Held from a batch's insert to its removal from the buffer, and by a reader across
        # its query and its look at the buffer: the two views never overlap or miss a row.
        self._io = asyncio.Lock()
        # The current burst of dropped rows (buffer full): all of it, and the part not yet
        # logged, and when it was last logged (None: no burst).
        self._burst_dropped = 0
        self._unlogged_drops = 0
        self._drops_logged_at: float | None = None
        metrics.gauge(
            "ai_ledger_buffer_rows",
            "",
            "Ledger rows waiting to be written",
            lambda: [(float(len(self._buffer)), {})],
        )

    def record(self, rows: Sequence[UsageRow]) -> None:
        """Queue rows for the writer; never blocks and never touches the database."""
        dropped = 0
        for row in rows:
            if len(self._buffer) >= self._max_rows:
                dropped += 1
                continue
            self._end_drop_burst()
            self._buffer.append(row)
        if dropped:
            self._metrics.ledger_write_failures.add(dropped, {"reason": "buffer_full"})
            self._log_drops(dropped)
        if len(self._buffer) >= self._batch:
            self._wake.set()

    def _log_drops(self, dropped: int) -> None:
        """One line when a burst of drops starts, then at most one per DROP_LOG_INTERVAL_S
        with the count since the last: a full buffer drops every row, and a line per row
        would flood the log exactly when the database is already in trouble."""
        now = self._clock.monotonic()
        self._burst_dropped += dropped
        if self._drops_logged_at is None:
            self._drops_logged_at = now
            log.error(
                "ledger buffer full (%d rows): dropping rows; the database has been "
                "unavailable too long (further drops are counted and logged every %.0fs)",
                self._max_rows,
                DROP_LOG_INTERVAL_S,
            )
            self._unlogged_drops = dropped - 1
            return
        self._unlogged_drops += dropped
        if now - self._drops_logged_at >= DROP_LOG_INTERVAL_S:
            log.error(
                "ledger buffer still full: %d more rows dropped (%d in this burst)",
                self._unlogged_drops,
                self._burst_dropped,
            )
            self._drops_logged_at = now
            self._unlogged_drops = 0

    def _end_drop_burst(self) -> None:
        """The buffer takes rows again: say how many the burst dropped in all."""
        if self._drops_logged_at is None:
            return
        log.error(
            "ledger buffer takes rows again: %d rows were dropped while it was full",
            self._burst_dropped,
        )
        self._burst_dropped = self._unlogged_drops = 0
        self._drops_logged_at = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="usage-ledger-writer")

    def status(self) -> LedgerStatus:
        """Read-only: the writer task is running (started, not stopping, not crashed) and how
        full the buffer is. A database outage alone keeps the writer alive and buffering."""
        task = self._task
        alive = task is not None and not task.done() and not self._stopping
        return LedgerStatus(alive, len(self._buffer), self._max_rows)

    async def _run(self) -> None:
        # Never cancelled mid-write (close() asks it to stop), so a committed batch is
        # always removed from the buffer and never written twice.
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._backoff()):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    def _backoff(self) -> float:
        """The flush interval, growing (to 30 s) while writes keep failing."""
        growth: float = 2.0 ** min(self._failures, 6)
        return min(30.0, self._interval * growth)

    async def flush(self) -> bool:
        """Write everything buffered now; False if the database refused (rows are kept).

        Only the writer task calls it, and close() once that task has ended: one writer."""
        while self._buffer:
            async with self._io:
                batch = [self._buffer[i] for i in range(min(self._batch, len(self._buffer)))]
                try:
                    async with self._engine.begin() as connection:
                        await connection.execute(
                            insert(llm_usage_logs), [r.values() for r in batch]
                        )
                except (SQLAlchemyError, OSError) as exc:
                    self._failures += 1
                    self._metrics.ledger_write_failures.add(1, {"reason": "database"})
                    log.error(
                        "ledger write failed (%s); %d rows kept for retry",
                        type(exc).__name__,
                        len(self._buffer),
                    )
                    return False
                for _ in batch:
                    self._buffer.popleft()
            self._failures = 0
            self._end_drop_burst()
        return True

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop the writer and flush what is left (graceful shutdown), retrying for a while
        if the database is briefly away."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._buffer and not await self.flush():
                    await self._clock.sleep(0.2)
        if self._buffer:
            log.error("ledger closed with %d rows unwritten", len(self._buffer))

    async def spend_today(self) -> dict[str, dict[str, float]]:
        """Today's cost by provider and by caller, to rebuild budgets after a restart."""
        return await self.spend_between(self._day_start(), None)

    async def spend_between(
        self, start: datetime, end: datetime | None
    ) -> dict[str, dict[str, float]]:
        """Cost by provider and by caller of the rows written from `start` up to `end`
        (excluded; None: no end), to rebuild a day's or a month's budgets. Reads the
        database only: rows still buffered are not there yet."""
        t = llm_usage_logs.c
        start = start.astimezone(UTC)  # see _day_start
        window = [t.created_at >= start]
        if end is not None:
            window.append(t.created_at < end.astimezone(UTC))
        query_provider = (
            select(t.provider, func.sum(t.cost_usd)).where(*window).group_by(t.provider)
        )
        query_caller = select(t.user_id, func.sum(t.cost_usd)).where(*window).group_by(t.user_id)
        async with self._engine.connect() as connection:
            providers = {
                str(p): _number(c) for p, c in (await connection.execute(query_provider)).all()
            }
            callers = {
                str(u): _number(c) for u, c in (await connection.execute(query_caller)).all()
            }
        return {"providers": providers, "callers": callers}

    def _day_start(self) -> datetime:
        """Midnight in BUDGET_TIMEZONE, in UTC: rows are stored in UTC, and SQLite compares
        the stored text, so a bound in another zone would shift the day by its offset."""
        day = self.today()
        return datetime.combine(day, time(), tzinfo=self._zone).astimezone(UTC)

    def _month_start(self) -> datetime:
        first = self.today().replace(day=1)
        return datetime.combine(first, time(), tzinfo=self._zone).astimezone(UTC)

    def this_month(self) -> str:
        return self.today().strftime("%Y-%m")

    def today(self) -> date:
        return self._clock.now().astimezone(self._zone).date()

    async def usage_today(self, caller: str | None = None) -> list[dict[str, Any]]:
        """Today's rows summed by provider and model (optionally for one caller), for
        GET /v1/usage: the database's rows plus those still buffered, merged here, so a
        caller sees their own last call without a write on the request path. Raises
        LedgerUnavailable (503, Retry-After) when the database cannot be read."""
        return await self._usage_since(self._day_start(), caller)

    async def usage_month(self, caller: str | None = None) -> list[dict[str, Any]]:
        """The same as `usage_today`, for this month (in BUDGET_TIMEZONE)."""
        return await self._usage_since(self._month_start(), caller)

    async def _usage_since(self, start: datetime, caller: str | None) -> list[dict[str, Any]]:
        t = llm_usage_logs.c
        query = (
            select(
                t.provider,
                t.model,
                func.count(),
                func.sum(t.prompt_tokens),
                func.sum(t.completion_tokens),
                func.sum(t.cost_usd),
                func.sum(case((t.outcome == "success", 1), else_=0)),
                func.sum(case((t.cached, 1), else_=0)),
            )
            .where(t.created_at >= start)
            .group_by(t.provider, t.model)
        )
        if caller is not None:
            query = query.where(t.user_id == caller)
        try:
            async with self._io:  # no batch is between its insert and its removal meanwhile
                async with self._engine.connect() as connection:
                    result = (await connection.execute(query)).all()
                buffered = [
                    row
                    for row in self._buffer
                    if row.created_at >= start and (caller is None or row.user_id == caller)
                ]
        except (SQLAlchemyError, OSError) as exc:
            log.warning("ledger read failed (%s)", type(exc).__name__)
            raise LedgerUnavailable(
                "the usage ledger's database cannot be read now; try again shortly",
                retry_after_s=self._backoff(),
            ) from exc
        lines: dict[tuple[str, str | None], _UsageLine] = {}
        for provider, model, attempts, prompt, completion, cost, successes, hits in result:
            lines[(str(provider), None if model is None else str(model))] = _UsageLine(
                attempts=int(_number(attempts)),
                successes=int(_number(successes)),
                cache_hits=int(_number(hits)),
                prompt_tokens=int(_number(prompt)),
                completion_tokens=int(_number(completion)),
                cost_usd=_number(cost),
            )
        for row in buffered:
            lines.setdefault((row.provider, row.model), _UsageLine()).add(row)
        return [
            {"provider": provider, "model": model, **lines[(provider, model)].out()}
            for provider, model in sorted(lines, key=_line_order)
        ]


@dataclass(slots=True)
class _UsageLine:
    """One provider and model's sums for GET /v1/usage (the SQL query's columns)."""

    attempts: int = 0
    successes: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, row: UsageRow) -> None:
        self.attempts += 1
        self.successes += row.outcome == "success"
        self.cache_hits += row.cached
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.cost_usd += row.cost_usd

    def out(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "successes": self.successes,
            "cache_hits": self.cache_hits,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 9),
        }


def _line_order(key: tuple[str, str | None]) -> tuple[str, bool, str]:
    """By provider, then model, a row without a model first (as SQLite orders NULL)."""
    provider, model = key
    return provider, model is not None, model or ""


def _number(value: object) -> float:
    """A SUM() result: a float, a Decimal (PostgreSQL numeric) or NULL."""
    return float(value) if isinstance(value, int | float | Decimal) else 0.0
