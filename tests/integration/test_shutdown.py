"""Graceful shutdown: SIGTERM flushes the ledger; a restart keeps the day's spend."""

from __future__ import annotations

import asyncio
import signal

import httpx

from tests.support.client import AUTH_HEADERS
from tests.support.ledger import ledger_rows
from tests.support.sandbox import Sandbox, fresh_database_url
from tests.support.service import ServiceProcess, sandbox_env


async def test_sigterm_mid_load_loses_no_ledger_row(sandbox: Sandbox) -> None:
    database_url = fresh_database_url()
    # A long flush interval: rows are still buffered when SIGTERM arrives.
    service = ServiceProcess(
        sandbox_env(sandbox.base_url, database_url, LEDGER_FLUSH_INTERVAL_S="60")
    ).start()
    sandbox.chaos("groq", latency_ms=200)
    try:
        async with httpx.AsyncClient(
            base_url=service.url, headers=AUTH_HEADERS, timeout=30, trust_env=False
        ) as client:
            requests = [
                asyncio.create_task(client.post("/v1/ai/completions", json={"prompt": f"p{i}"}))
                for i in range(30)
            ]
            await asyncio.sleep(0.1)  # requests in flight
            assert service.process is not None
            service.process.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*requests, return_exceptions=True)
    finally:
        code = service.stop()
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert code in (0, -signal.SIGTERM)
    answered = [r for r in responses if isinstance(r, httpx.Response) and r.status_code == 200]
    rows = ledger_rows(database_url)
    # Every upstream call the sandbox saw is a row, and every answer given has its row.
    assert len(rows) == sandbox.completions("groq")
    assert len(rows) >= len(answered) > 0
