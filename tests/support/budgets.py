"""Budget stores as a replica builds them (its own SharedState, the shared ledger), for tests
that put two or more on one real Redis; and a few readers of what Redis holds."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis.asyncio as redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.clock import ManualClock
from app.core.db import make_engine, migrate
from app.core.ids import random_hex
from app.core.settings import Settings
from app.core.shared import SharedState
from app.core.telemetry import Telemetry
from app.modules.ai.budget_store import RedisBudgets
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.usage import UsageLedger, UsageRow
from tests.support.redis import RedisServer

CALLERS = {"alice": "k" * 12, "bob": "j" * 12}


@dataclass
class Replica:
    """One replica's budget store, its Redis handle and its telemetry."""

    store: RedisBudgets
    shared: SharedState
    ledger: UsageLedger
    telemetry: Telemetry

    async def aclose(self) -> None:
        await self.store.aclose()
        await self.shared.aclose()


@dataclass
class Cluster:
    """Replicas on one Redis (a prefix of their own) and one ledger database."""

    redis_url: str
    clock: ManualClock
    database_url: str
    engine: AsyncEngine
    settings: dict[str, Any]
    prefix: str = field(default_factory=lambda: f"t{random_hex()[:8]}:")
    replicas: list[Replica] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        redis_url: str,
        clock: ManualClock,
        database_url: str,
        *,
        migrated: bool = False,
        **settings: Any,
    ) -> Cluster:
        if not migrated:
            await migrate(database_url)
        values: dict[str, Any] = {"gateway_api_keys": CALLERS, "database_url": database_url}
        values.update(settings)
        return cls(redis_url, clock, database_url, make_engine(database_url), values)

    def replica(
        self, name: str | None = None, *, heartbeat_s: float = 60.0, redis_url: str | None = None
    ) -> Replica:
        """A replica; `redis_url` (a proxy in front of the cluster's Redis) to cut it off
        alone."""
        settings = Settings(**self.settings, redis_url=self.redis_url)
        telemetry = Telemetry()
        metrics = AIMetrics(telemetry, frozenset())
        shared = SharedState(
            redis_url or self.redis_url,
            prefix=self.prefix,
            replica_id=name,
            heartbeat_s=heartbeat_s,
            timeout_s=0.5,  # a loaded test machine, not a production budget
        )
        ledger = UsageLedger(self.engine, settings, self.clock, metrics)
        store = RedisBudgets(settings, self.clock, metrics, shared, ledger)
        replica = Replica(store, shared, ledger, telemetry)
        self.replicas.append(replica)
        return replica

    async def write_ledger(self, *rows: tuple[str, str, float, datetime]) -> None:
        """Rows (provider, caller, cost, created_at) straight into the ledger's database."""
        ledger = UsageLedger(self.engine, Settings(**self.settings), self.clock, _metrics())
        ledger.record(
            [
                UsageRow(
                    request_id=random_hex(),
                    user_id=caller,
                    service_name="tests",
                    provider=provider,
                    outcome="success",
                    cost_usd=cost,
                    created_at=created_at,
                )
                for provider, caller, cost, created_at in rows
            ]
        )
        assert await ledger.flush()

    async def hash(self, *parts: str) -> dict[str, str]:
        """A period's hash as Redis holds it (e.g. hash("d", "2026-03-01"))."""
        client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        try:
            data: dict[str, str] = await client.hgetall(self.prefix + "budget:" + ":".join(parts))
            return data
        finally:
            await client.aclose()

    async def aclose(self) -> None:
        for replica in self.replicas:
            await replica.aclose()
        await self.engine.dispose()


@contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    """Redis alive but answering nothing (SIGSTOP): commands sent meanwhile are executed
    when it resumes, after their senders gave up on the answer."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def _metrics() -> AIMetrics:
    return AIMetrics(Telemetry(), frozenset())


def nano(data: dict[str, str], field_name: str) -> int:
    return int(data.get(field_name, "0"))
