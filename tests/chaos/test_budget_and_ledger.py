"""Money and records under load: budgets running out mid-load, and the ledger's database
going away for a while."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from sqlalchemy.engine import make_url

from tests.chaos.harness import ChaosRun, metric_total
from tests.chaos.invariants import Expect, verdict
from tests.chaos.scenario import Chaos

pytestmark = pytest.mark.chaos

# Per call, with a 16-token answer cap: Gemini about 4e-6 USD (8e-6 reserved), OpenAI about
# 8e-6 (1.7e-5 reserved). These run out after roughly 80 and 20 calls.
BUDGETS = {"gemini": 0.0004, "openai": 0.0002}


@pytest.mark.parametrize("fallback", ["free_fallback", "no_free_provider"])
async def test_budget_exhausted_mid_load(chaos: Chaos, fallback: str) -> None:
    """Paid providers come first and their daily budgets run out under 20 concurrent
    requests. Reservations are exact, so no budget is passed; after that the paid providers
    are skipped without a call: the free Groq answers, or (without it) callers get a typed
    429 budget-exceeded with a Retry-After."""
    requests, rate, concurrency = 240, 60.0, 20
    priority = "gemini,openai,groq" if fallback == "free_fallback" else "gemini,openai"
    run = await chaos.start(
        {
            "AI_PROVIDER_PRIORITY": priority,
            "DAILY_BUDGET_USD_GEMINI": str(BUDGETS["gemini"]),
            "DAILY_BUDGET_USD_OPENAI": str(BUDGETS["openai"]),
        }
    )
    await run.load(requests, rate=rate, concurrency=concurrency)
    observation = await run.finish()
    spent = {
        name: metric_total(observation.metrics, "ai_budget_spent_usd", budget=name)
        for name in BUDGETS
    }
    paid_calls = sum(observation.edge_calls[name] or 0 for name in BUDGETS)
    paid_answers = sum(
        o.ok and o.body is not None and o.body["provider"] in BUDGETS for o in observation.outcomes
    )
    tail = observation.outcomes[-40:]
    if fallback == "free_fallback":
        skipped = sum(
            o.ok
            and o.body is not None
            and o.body["provider"] == "groq"
            and {a["error_type"] for a in o.attempts[:-1]} == {"budget_exceeded"}
            for o in tail
        )
    else:
        skipped = sum(
            o.status == 429 and not any(a["outcome"] != "skipped" for a in o.attempts) for o in tail
        )
    waits = sorted({int(o.retry_after or 0) for o in observation.outcomes if o.status == 429})
    extra = [
        verdict(
            "exhausted",
            "the budgets really ran out",
            all(spent[n] >= 0.8 * BUDGETS[n] for n in BUDGETS),
            ", ".join(f"{n} spent {spent[n]:.6f} of {BUDGETS[n]:g}" for n in BUDGETS),
        ),
        verdict(
            "skipped",
            "paid providers are skipped without a call once spent",
            skipped == len(tail) and paid_calls == paid_answers,
            f"last {len(tail)}: {skipped} skipped the paid providers; "
            f"{paid_calls} paid calls for {paid_answers} paid answers",
        ),
    ]
    if fallback == "no_free_provider":
        extra.append(
            verdict(
                "retry-after",
                "429s say when the day resets",
                bool(waits) and waits[0] >= 1 and waits[-1] <= 86_400,
                f"Retry-After from {waits[0]} to {waits[-1]} s" if waits else "no 429",
            )
        )
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=requests,
            upstream_why="at most 1 call per request: nothing fails upstream",
            allowed_errors=frozenset({"budget-exceeded"} if fallback == "no_free_provider" else ()),
            min_success=0.999 if fallback == "free_fallback" else None,
            extra=extra,
        ),
    )


class DatabaseLock:
    """Another process holding an exclusive lock on the SQLite ledger: for the gateway the
    database is unavailable (every write times out on the lock) until it is released."""

    def __init__(self, database_url: str) -> None:
        path = make_url(database_url).database
        assert path
        self._path = path
        self._connection: sqlite3.Connection | None = None

    async def acquire(self) -> None:
        def lock() -> sqlite3.Connection:
            connection = sqlite3.connect(
                self._path, isolation_level=None, timeout=10, check_same_thread=False
            )
            connection.execute("BEGIN EXCLUSIVE")
            return connection

        self._connection = await asyncio.to_thread(lock)

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await asyncio.to_thread(lambda: (connection.execute("ROLLBACK"), connection.close()))


async def _drained(run: ChaosRun, timeout_s: float) -> float | None:
    """Seconds until the ledger buffer is empty again, or None if it stays full."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        text = await run.metrics()
        if metric_total(text, "ai_ledger_buffer_rows") == 0:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    return None


async def test_ledger_database_unavailable(chaos: Chaos) -> None:
    """The ledger's database is locked by another process for 3 s of a 6 s load. Requests
    are served as if nothing happened (the ledger is off the request path), the writer keeps
    the rows and retries, catches up once the database is back, and no row is lost."""
    requests, rate, concurrency, start, window = 240, 40.0, 20, 1.0, 3.0
    run = await chaos.start({"DATABASE_BUSY_TIMEOUT_S": "0.2", "LEDGER_FLUSH_INTERVAL_S": "0.1"})
    lock = DatabaseLock(run.database_url)
    try:
        await run.gather(
            run.load(requests, rate=rate, concurrency=concurrency),
            run.script(
                (start, "ledger database locked", lock.acquire),
                (start + window, "ledger database back", lock.release),
            ),
        )
    finally:
        await lock.release()
    drained = await _drained(run, timeout_s=15)
    observation = await run.finish()
    during = [o for o in observation.outcomes if start <= o.started <= start + window]
    slowest = max((o.latency_s for o in during), default=0.0)
    failures = metric_total(
        observation.metrics, "ai_ledger_write_failures_total", reason="database"
    )
    dropped = metric_total(
        observation.metrics, "ai_ledger_write_failures_total", reason="buffer_full"
    )
    chaos.conclude(
        run,
        observation,
        Expect(
            max_upstream=requests,
            upstream_why="1 call per request: the upstreams are healthy",
            extra=[
                verdict(
                    "outage",
                    "the database really was unavailable",
                    failures >= 1,
                    f"{failures:.0f} failed ledger writes",
                ),
                verdict(
                    "off-path",
                    "requests do not wait for the ledger",
                    bool(during) and slowest < 1.0,
                    f"slowest request during the outage {slowest * 1000:.0f} ms",
                ),
                verdict(
                    "catch-up",
                    "the writer catches up while running",
                    drained is not None and dropped == 0,
                    f"buffer empty {drained:.1f}s after the load, {dropped:.0f} rows dropped"
                    if drained is not None
                    else "buffer still holding rows 15 s after the load",
                ),
            ],
        ),
    )
