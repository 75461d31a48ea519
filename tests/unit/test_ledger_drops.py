"""A full ledger buffer drops rows: every one counted in the metric, but logged once per
burst (the first drop, a count at most every DROP_LOG_INTERVAL_S, and a total when the
buffer takes rows again), never a line per row."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.clock import ManualClock
from app.core.db import make_engine, migrate
from app.core.settings import Settings
from app.core.telemetry import Telemetry
from app.modules.ai.metrics import AIMetrics
from app.modules.ai.usage import DROP_LOG_INTERVAL_S, UsageLedger, UsageRow
from tests.support.sandbox import fresh_database_url

CAPACITY = 10


def _row(clock: ManualClock) -> UsageRow:
    return UsageRow(
        request_id="r",
        user_id="tests",
        service_name="s",
        provider="openai",
        outcome="success",
        created_at=clock.now(),
    )


def _dropped(telemetry: Telemetry) -> float:
    text = telemetry.render(None)[0].decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "ai_ledger_write_failures_total"
                and sample.labels.get("reason") == "buffer_full"
            ):
                return float(sample.value)
    return 0.0


def _drop_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "app.ai.ledger"]


async def test_a_burst_of_drops_is_logged_once_with_its_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.ai.ledger")
    database_url = fresh_database_url()
    await migrate(database_url)
    engine = make_engine(database_url)
    clock = ManualClock(wall=datetime(2026, 3, 1, 12, tzinfo=UTC))
    telemetry = Telemetry()
    settings = Settings(ledger_buffer_max_rows=CAPACITY, ledger_batch_size=CAPACITY)
    ledger = UsageLedger(engine, settings, clock, AIMetrics(telemetry, frozenset()))
    try:
        ledger.record([_row(clock) for _ in range(CAPACITY)])  # full, nothing dropped
        for _ in range(200):  # 200 requests' rows while the database is away
            ledger.record([_row(clock)])
        lines = _drop_lines(caplog)
        assert len(lines) == 1
        assert "ledger buffer full" in lines[0]
        assert _dropped(telemetry) == 200  # the metric counts every row

        clock.advance(DROP_LOG_INTERVAL_S)  # a long outage: one reminder with a count
        ledger.record([_row(clock) for _ in range(5)])
        lines = _drop_lines(caplog)
        assert len(lines) == 2
        assert "204 more rows dropped (205 in this burst)" in lines[1]

        assert await ledger.flush()  # the database is back: the burst ends
        lines = _drop_lines(caplog)
        assert len(lines) == 3
        assert "205 rows were dropped" in lines[2]
        assert _dropped(telemetry) == 205

        ledger.record([_row(clock)])  # room again: no more lines
        assert len(_drop_lines(caplog)) == 3
    finally:
        await engine.dispose()
