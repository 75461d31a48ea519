"""Secrets inside URLs never reach what the gateway prints or logs: `python -m app
check-config` and `serve` run for real in a subprocess with the secrets in their environment,
and the budget webhook's failures are logged while a real receiver on 127.0.0.1 refuses them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.clock import ManualClock
from app.core.settings import ProviderName, Settings
from app.core.telemetry import Telemetry
from app.modules.ai.budget import BudgetGuard, Reservation
from app.modules.ai.metrics import AIMetrics
from tests.support.sandbox import ROOT
from tests.unit.test_masking import TOKEN_NAMES, leaks, secrets

# Variables of ours the child must not inherit from the test process.
_OURS = ("GROQ_", "GEMINI_", "AZURE_OPENAI_", "OPENAI_", "AI_", "GATEWAY_", "DAILY_BUDGET_")


def _run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    base.pop("DATABASE_URL", None)
    base.pop("BUDGET_ALERT_WEBHOOK_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=base | {"GATEWAY_API_KEYS": "alice:alice-key-000001"} | env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secrets, secrets, st.sampled_from(TOKEN_NAMES))
def test_check_config_never_prints_a_url_secret(password: str, token: str, name: str) -> None:
    encoded = quote(password, safe="")
    result = _run(
        "check-config",
        env={
            "DATABASE_URL": f"postgresql+asyncpg://gateway:{encoded}@db.internal:5432/gw",
            "BUDGET_ALERT_WEBHOOK_URL": (
                f"https://hooks.example.com/alerts?channel=ops&{name}={quote(token, safe='')}"
            ),
        },
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert leaks(password, output) == []
    assert leaks(token, output) == []
    shown = json.loads(result.stdout)
    # Still useful: where the ledger and the alerts go is shown, only the secrets are not.
    assert shown["database_url"] == "postgresql+asyncpg://gateway:****@db.internal:5432/gw"
    assert shown["budget_alert_webhook_url"] == (
        f"https://hooks.example.com/****?channel=ops&{name}=****"
    )


def test_serve_never_logs_the_database_password() -> None:
    """The startup line names the ledger; the start then fails (nothing listens on port 1)
    and the traceback must not carry the password either."""
    password = "Qz7p@ss:w/rd%?#&Wk4"
    url = f"postgresql+asyncpg://gateway:{quote(password, safe='')}@127.0.0.1:1/gw"
    result = _run("serve", "--port", "0", env={"DATABASE_URL": url, "LOG_LEVEL": "DEBUG"})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ledger=postgresql+asyncpg://gateway:****@127.0.0.1:1/gw" in output
    assert leaks(password, output) == []


@pytest.fixture(scope="module")
def refusing_webhook() -> Iterator[str]:
    """An alert receiver on 127.0.0.1 that answers every alert with 500."""
    started = threading.Event()
    stop = threading.Event()
    port: list[int] = []

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=500)

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/alerts", refuse)
        runner = web.AppRunner(app, access_log=None)  # the far side's own log is not ours
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port.append(runner.addresses[0][1])
        started.set()
        await asyncio.to_thread(stop.wait)
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield f"http://127.0.0.1:{port[0]}/alerts"
    stop.set()
    thread.join(10)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def _every_log_line() -> Iterator[_Records]:
    """Every record of every logger at DEBUG, httpx's included."""
    handler = _Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def _alert_through(url: str) -> None:
    """Pass a budget, so the guard POSTs its alerts to `url` (refused), then wait for them."""
    telemetry = Telemetry()
    guard = BudgetGuard(
        Settings(daily_budget_usd_openai=0.001, budget_alert_webhook_url=url),
        ManualClock(),
        AIMetrics(telemetry, frozenset()),
    )
    held = guard.reserve(ProviderName.OPENAI, "alice", 0.0005)
    assert isinstance(held, Reservation)
    guard.settle(held, 0.001)  # 100 %: alerts at 80, 90 and 100
    await guard.aclose()
    telemetry.shutdown()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=secrets, name=st.sampled_from(TOKEN_NAMES))
def test_webhook_failures_never_log_the_token(refusing_webhook: str, token: str, name: str) -> None:
    url = f"{refusing_webhook}?{name}={quote(token, safe='')}"
    with _every_log_line() as logs:
        asyncio.run(_alert_through(url))
    failures = [line for line in logs.lines if "budget alert webhook failed" in line]
    assert len(failures) == 3
    assert all("url=http://127.0.0.1:" in line for line in failures)
    assert leaks(token, "\n".join(logs.lines)) == []
