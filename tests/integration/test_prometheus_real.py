"""The alert rules and the dashboard against a real Prometheus (Debian package, loopback,
1 s scrape and evaluation) scraping the real service (`python -m app serve`) that talks to
the sandbox and a Redis of its own:

- every metric a rule or a dashboard panel reads is one Prometheus scraped;
- a provider broken in the sandbox makes the breaker alert pending, then firing; healed, the
  alert resolves;
- spending a budget past 80 % fires the 80 % budget alert;
- every dashboard query evaluates, and the core panels return data.

The rules are the real file with every `for:` shortened (expressions untouched), so the
test waits seconds. The sandbox exports no metrics of its own (it has no /metrics), so only
the service is scraped. Everything is awaited with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.worker_metrics import WORKER_UP
from infra.grafana.build_dashboard import CORE
from infra.sandbox.literature.hosts import gateway_env
from tests.support.client import AUTH_HEADERS
from tests.support.prometheus import (
    RULES,
    PrometheusServer,
    binary,
    dashboard_panels,
    grafana_to_promql,
    iter_exprs,
    load_dashboard,
    metric_names,
    poll,
    rules_with_short_for,
)
from tests.support.redis import RedisServer
from tests.support.sandbox import Sandbox
from tests.support.service import ServiceProcess, sandbox_env

# The breaker alert waits 5 s (its real `for` is 2 m): long enough to be seen pending.
BREAKER_FOR = "5s"
BREAKER_OPEN = 'ai_provider_circuit_breaker_state{provider="groq"} 1.0'
OPENAI_MODEL = "openai/gpt-4o-mini"
# One pinned openai call of 1000 output tokens (the sandbox answers at length and counts
# tokens as the real API would) costs about 6.0e-4 USD at gpt-4o-mini's price, and its worst
# case (every prompt byte a token, all of max_tokens) about as much: it is admitted against
# a 7e-4 USD daily budget and spends 86 % of it, past the 80 % level and short of 90 %.
OPENAI_DAILY_BUDGET_USD = 7e-4
LONG_ANSWER = "token " * 1000
MAX_TOKENS = 1000


@dataclass
class Stack:
    service: ServiceProcess
    prometheus: PrometheusServer
    sandbox: Sandbox
    database: Path

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.service.url, headers=AUTH_HEADERS, timeout=30, trust_env=False
        )

    def service_metrics(self) -> str:
        return httpx.get(f"{self.service.url}/metrics", timeout=10, trust_env=False).text


def _budget_share(client: httpx.Client, name: str) -> float:
    for line in client.get("/v1/budgets").json()["budgets"]:
        if line["budget"] == name and line["period"] == "day":
            return float(line["spent_usd"]) / float(line["limit_usd"])
    raise AssertionError(f"no daily budget {name}")


def _spend_past_80_percent(stack: Stack, client: httpx.Client) -> float:
    """One pinned openai call, long enough to pass 80 % of its daily budget."""
    stack.sandbox.chaos("openai", content=LONG_ANSWER)
    try:
        answer = client.post(
            "/v1/ai/completions",
            json={"prompt": "budget", "model": OPENAI_MODEL, "max_tokens": MAX_TOKENS},
        )
    finally:
        stack.sandbox.clear("openai")
    assert answer.status_code == 200, answer.text
    share = _budget_share(client, "openai")
    assert 0.8 <= share < 0.9, share
    return share


def _break_groq(stack: Stack, client: httpx.Client) -> None:
    """groq fails every call and probe until its breaker opens (callers are served by the
    next provider meanwhile, which counts a fallback)."""
    stack.sandbox.chaos("groq", error_rate=1.0, affect_probes=True)

    def opened() -> bool | None:
        answer = client.post("/v1/ai/completions", json={"prompt": "break"})
        assert answer.status_code == 200, answer.text
        return BREAKER_OPEN in stack.service_metrics() or None

    poll(opened, timeout_s=15, what="groq's breaker to open")


def _heal_groq(stack: Stack, client: httpx.Client) -> None:
    """groq answers again; after the reset timeout a call is the half-open trial and its
    success closes the breaker."""
    stack.sandbox.clear("groq")

    def healed() -> bool | None:
        answer = client.post("/v1/ai/completions", json={"prompt": "heal"})
        return answer.json().get("provider") == "groq" or None

    poll(healed, timeout_s=20, what="groq to serve again", every_s=0.5)


def _traffic(stack: Stack) -> None:
    """Enough traffic for every family a rule or a panel reads to exist: calls, cache hits,
    a stream, a detection, spend against a daily and a monthly budget, a breaker opened and
    closed (transitions, fallbacks), and one failed ledger write (the ledger's database
    locked by someone else for a moment)."""
    with stack.client() as client:
        for prompt in ("alpha", "beta", "alpha"):
            answer = client.post("/v1/ai/completions", json={"prompt": prompt, "cache": True})
            assert answer.status_code == 200, answer.text
        assert answer.json()["cached"] is True
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "fast", "stream": True, "messages": [{"role": "user", "content": "s"}]},
        ) as stream:
            assert stream.status_code == 200
            stream.read()
        detect = client.post("/v1/fulltext/detect", json={"paper": {"doi": "10.5555/DB.0001"}})
        assert detect.status_code == 200, detect.text
        _spend_past_80_percent(stack, client)
        _break_groq(stack, client)
        _heal_groq(stack, client)

        locker = sqlite3.connect(stack.database, timeout=0, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            assert client.post("/v1/ai/completions", json={"prompt": "ledger"}).status_code == 200
            poll(
                lambda: "ai_ledger_write_failures_total{" in stack.service_metrics() or None,
                timeout_s=15,
                what="a failed ledger write while the database is locked",
            )
        finally:
            locker.execute("ROLLBACK")
            locker.close()


@pytest.fixture(scope="module")
def stack(
    sandbox_process: Sandbox,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    binary("prometheus")
    sandbox_process.reset()
    workdir = tmp_path_factory.mktemp("prometheus-real")
    database = workdir / "ledger.db"
    env = sandbox_env(
        sandbox_process.base_url,
        f"sqlite+aiosqlite:///{database}",
        REDIS_URL=redis_server.url,
        # Series the rules read that exist only when configured: key quotas, monthly caps.
        GROQ_RPD_PER_KEY="1000",
        DAILY_BUDGET_USD_OPENAI=str(OPENAI_DAILY_BUDGET_USD),
        MONTHLY_BUDGET_USD_TOTAL="100",
        # A broken provider opens its breaker after two failures and may try again 2 s on.
        GROQ_BREAKER_FAIL_MAX="2",
        GROQ_BREAKER_RESET_TIMEOUT_S="2",
        # Probes would take the half-open trial on their own schedule: not during the test.
        AI_HEALTH_PROBE_INTERVAL_S="600",
        # Redis on loopback, on a busy CI machine: a 50 ms hiccup must not count as an outage
        # (the budget would switch to its outage share in the middle of the test).
        REDIS_TIMEOUT_S="1",
        # A locked ledger database fails a batch write at once rather than after 5 s.
        DATABASE_BUSY_TIMEOUT_S="0.1",
        **gateway_env(sandbox_process.base_url),
    )
    service = ServiceProcess(env, log_path=workdir / "service.log").start()
    rules = rules_with_short_for(
        RULES,
        workdir / "rules.yml",
        for_s={"AIProviderCircuitOpen": BREAKER_FOR},
        default="1s",
    )
    prometheus = PrometheusServer([f"127.0.0.1:{service.port}"], rules)
    try:
        prometheus.start()
        stack = Stack(service, prometheus, sandbox_process, database)
        _traffic(stack)
        yield stack
    finally:
        prometheus.stop()
        service.stop()
        sandbox_process.reset()


def _scraped_after(stack: Stack, names: set[str]) -> set[str]:
    """The names Prometheus has once a scrape after the traffic has landed (or what is
    missing at the deadline, for the failure message)."""
    missing: set[str] = set()

    def check() -> set[str] | None:
        nonlocal missing
        missing = names - stack.prometheus.metric_names()
        return None if missing else names

    try:
        return poll(check, timeout_s=15, what="every metric to be scraped")
    except AssertionError:
        return names - missing


def test_every_metric_a_rule_or_panel_reads_is_scraped(stack: Stack) -> None:
    used: dict[str, set[str]] = {}
    for where, expr in iter_exprs():
        for name in metric_names(grafana_to_promql(expr)):
            used.setdefault(name, set()).add(where)
    assert "ai_provider_circuit_breaker_state" in used
    # Exists only with WORKERS >= 2; this stack runs one worker. test_workers.py scrapes it
    # from two workers, under the name the rule reads.
    assert used.pop(WORKER_UP) == {"rule GatewayWorkerDown"}
    scraped = _scraped_after(stack, set(used))
    missing = {name: sorted(used[name]) for name in sorted(set(used) - scraped)}
    assert missing == {}, "metrics read by rules or panels but never scraped"


def _alert_state(stack: Stack, name: str, provider: str) -> str | None:
    for alert in stack.prometheus.alerts(name):
        if alert["labels"].get("provider") == provider:
            state: str = alert["state"]
            return state
    return None


def test_breaker_alert_goes_pending_then_firing_and_resolves_when_healed(stack: Stack) -> None:
    name = "AIProviderCircuitOpen"
    # Closed since the set-up's brief outage: no alert (any from then has resolved).
    poll(
        lambda: _alert_state(stack, name, "groq") is None or None,
        timeout_s=15,
        what="no breaker alert before the outage",
    )
    seen: list[str] = []

    def record(wanted: str) -> bool | None:
        state = _alert_state(stack, name, "groq")
        if state is not None and (not seen or seen[-1] != state):
            seen.append(state)
        return state == wanted or None

    with stack.client() as client:
        try:
            _break_groq(stack, client)
            poll(lambda: record("firing"), timeout_s=20, what="the alert to fire", every_s=0.1)
            assert seen == ["pending", "firing"]
            firing = stack.prometheus.alerts(name)[0]
            assert firing["labels"]["severity"] == "warning"
            assert "groq" in firing["annotations"]["summary"]
            assert firing["annotations"]["runbook_url"] == (
                "docs/runbooks/ai-provider-circuit-open.md"
            )
        finally:
            stack.sandbox.clear("groq")
        _heal_groq(stack, client)
    poll(
        lambda: _alert_state(stack, name, "groq") is None or None,
        timeout_s=15,
        what="the breaker alert to resolve",
    )


def test_a_budget_past_80_percent_fires_the_budget_alert(stack: Stack) -> None:
    with stack.client() as client:
        share = _budget_share(client, "openai")
    assert share >= 0.8

    def firing() -> dict[str, Any] | None:
        for alert in stack.prometheus.alerts("AIBudget80Percent"):
            if alert["labels"]["budget"] == "openai" and alert["state"] == "firing":
                return alert
        return None

    alert = poll(firing, timeout_s=15, what="the 80 % budget alert to fire")
    # 86 % is not 90 %: the next level stays silent.
    assert not stack.prometheus.alerts("AIBudget90Percent")
    assert alert["labels"]["period"] == "day"
    assert alert["annotations"]["summary"].startswith("Budget openai (day):")
    # Below 80 %, nothing: azure's budget (50 USD by default) spent nothing.
    budgets = {a["labels"]["budget"] for a in stack.prometheus.alerts("AIBudget80Percent")}
    assert "azure" not in budgets


def test_every_dashboard_query_evaluates_and_core_panels_have_data(stack: Stack) -> None:
    panels = dashboard_panels(load_dashboard())
    results: dict[str, int] = {}
    for panel in panels:
        for target in panel["targets"]:
            # An invalid query is an HTTP 400 with Prometheus' parse error: api() says which.
            series = stack.prometheus.query(grafana_to_promql(target["expr"]))
            results[panel["title"]] = results.get(panel["title"], 0) + len(series)

    empty: list[str] = []

    def core_filled() -> bool | None:
        empty[:] = [
            panel["title"]
            for panel in panels
            if panel["title"] in CORE
            and not any(
                stack.prometheus.query(grafana_to_promql(t["expr"])) for t in panel["targets"]
            )
        ]
        return not empty or None

    try:
        poll(core_filled, timeout_s=15, what="every core panel to return data", every_s=1)
    except AssertionError:
        pytest.fail(f"core panels without data: {empty}")
    assert set(results) == {p["title"] for p in panels}
    assert set(CORE) <= set(results)
