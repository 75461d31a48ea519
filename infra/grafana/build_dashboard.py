"""Writes infra/grafana/dashboards/gateway.json, the gateway's Grafana dashboard.

The JSON is generated so the panels stay reviewable here (one line of PromQL per query) and
the layout is computed, not hand-numbered. Run after a change and commit both files:

    .venv/bin/python -m infra.grafana.build_dashboard

tests/unit/test_dashboard.py checks the committed JSON is this script's output, and
tests/integration/test_prometheus_real.py runs every query against a real Prometheus that
scrapes the real service. The datasource is the provisioned one with uid `prometheus`
(infra/grafana/provisioning/datasources/).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "gateway.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"
WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    description: str
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    height: int = 8
    # Thresholds as (value, colour) above the base green, for gauges and ratios.
    thresholds: tuple[tuple[float, str], ...] = ()
    mappings: tuple[dict[str, Any], ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


def quantiles(metric: str, by: str, levels: tuple[float, ...]) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket[{RATE}])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in levels
    )


BREAKER_STATES = (
    {
        "type": "value",
        "options": {
            "0": {"text": "closed", "color": "green"},
            "1": {"text": "open", "color": "red"},
            "2": {"text": "half-open", "color": "orange"},
        },
    },
)
UP_DOWN = (
    {
        "type": "value",
        "options": {"0": {"text": "down", "color": "red"}, "1": {"text": "up", "color": "green"}},
    },
)

ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Traffic and errors",
        (
            Panel(
                "Upstream calls by provider and outcome",
                (
                    Query(
                        f"sum by (provider, outcome) (rate(ai_provider_requests_total[{RATE}]))",
                        "{{provider}} {{outcome}}",
                    ),
                ),
                "Calls to each provider per second, by outcome (success or the failure kind).",
                unit="reqps",
            ),
            Panel(
                "Provider failure ratio",
                (
                    Query(
                        "sum by (provider) (rate(ai_provider_requests_total"
                        f'{{outcome!~"success|cancelled|bad_request|caller_deadline"}}[{RATE}]))'
                        " / sum by (provider) (rate(ai_provider_requests_total"
                        f'{{outcome!~"cancelled|bad_request|caller_deadline"}}[{RATE}]))',
                        "{{provider}}",
                    ),
                ),
                "Failed calls over calls with a verdict (the caller's own bad requests and "
                "deadlines excluded). Alert AIProviderFailureRatioHigh above 10 %.",
                unit="percentunit",
                thresholds=((0.1, "red"),),
            ),
            Panel(
                "Gateway responses by status",
                (
                    Query(
                        "sum by (http_response_status_code) "
                        f"(rate(http_server_request_duration_seconds_count[{RATE}]))",
                        "{{http_response_status_code}}",
                    ),
                ),
                "What callers get. Alert GatewayHigh5xxRatio above 5 % of 5xx.",
                unit="reqps",
            ),
        ),
    ),
    (
        "Latency",
        (
            Panel(
                "Upstream latency percentiles",
                quantiles("ai_provider_latency_seconds", "provider", (0.5, 0.95, 0.99)),
                "Upstream call latency per provider. Alert AIProviderLatencyP95High above 5 s.",
                unit="s",
            ),
            Panel(
                "Time to first token (streams)",
                quantiles("ai_provider_time_to_first_token_seconds", "provider", (0.5, 0.95)),
                "From the upstream call to its first text, what a streaming caller waits.",
                unit="s",
            ),
            Panel(
                "Gateway overhead",
                quantiles("ai_gateway_overhead_seconds", "job", (0.5, 0.99)),
                "Time a request spends in the gateway itself (total minus upstream waits).",
                unit="s",
            ),
            Panel(
                "Adaptive timeout per provider",
                (Query("max by (provider) (ai_provider_timeout_seconds)", "{{provider}}"),),
                "The current per-call timeout, fitted to the provider's recent latency.",
                unit="s",
            ),
        ),
    ),
    (
        "Resilience",
        (
            Panel(
                "Circuit breaker state",
                (Query("max by (provider) (ai_provider_circuit_breaker_state)", "{{provider}}"),),
                "0 closed, 1 open, 2 half-open. Alert AIProviderCircuitOpen after 2 minutes.",
                kind="state-timeline",
                mappings=BREAKER_STATES,
            ),
            Panel(
                "Breaker transitions",
                (
                    Query(
                        "sum by (provider, to_state) (increase("
                        'ai_provider_circuit_breaker_transitions_total{origin="local"}'
                        f"[{RATE}]))",
                        "{{provider}} to {{to_state}}",
                    ),
                ),
                "State changes per provider, by the state entered: each decided once, by the"
                " replica whose breaker made it (the others apply it: origin=fleet).",
            ),
            Panel(
                "Fallbacks and retries",
                (
                    Query(
                        f"sum by (from_provider, to_provider) (rate(ai_fallbacks_total[{RATE}]))",
                        "fallback {{from_provider}} to {{to_provider}}",
                    ),
                    Query(
                        f"sum by (provider) (rate(ai_provider_retries_total[{RATE}]))",
                        "retry {{provider}}",
                    ),
                    Query(
                        f"sum by (provider) (rate(ai_local_saturation_total[{RATE}]))",
                        "pool saturated {{provider}}",
                    ),
                ),
                "Requests that moved on to the next provider, retries of the same provider, and "
                "calls not sent because our own pool was full.",
                unit="reqps",
            ),
            Panel(
                "Provider health",
                (Query("min by (provider) (ai_provider_health)", "{{provider}}"),),
                "1 healthy, 0.5 degraded, 0 unhealthy (probes and recent calls): "
                "/health/ai-providers has the detail.",
                thresholds=((0.5, "orange"), (1, "green")),
            ),
        ),
    ),
    (
        "Cost and budgets",
        (
            Panel(
                "Cost per provider (USD per hour)",
                (
                    Query(
                        f"sum by (provider) (rate(ai_provider_cost_usd_total[{RATE}])) * 3600",
                        "{{provider}}",
                    ),
                ),
                "Spend rate from the upstreams' real token counts.",
                unit="currencyUSD",
            ),
            Panel(
                "Daily budget used",
                (
                    Query(
                        "max by (budget) (ai_budget_spent_usd) "
                        "/ max by (budget) (ai_budget_limit_usd > 0)",
                        "{{budget}}",
                    ),
                ),
                "Spend today over each daily limit; alerts at 80, 90 and 100 %.",
                unit="percentunit",
                kind="bargauge",
                thresholds=((0.8, "yellow"), (0.9, "orange"), (1, "red")),
            ),
            Panel(
                "Daily spend, holds and limits (USD)",
                (
                    Query("max by (budget) (ai_budget_spent_usd)", "spent {{budget}}"),
                    Query("max by (budget) (ai_budget_reserved_usd)", "held {{budget}}"),
                    Query("max by (budget) (ai_budget_limit_usd)", "limit {{budget}}"),
                ),
                "Spent so far today, held by calls in flight (worst case), and the limit.",
                unit="currencyUSD",
            ),
            Panel(
                "Monthly budget used",
                (
                    Query(
                        "max by (budget) (ai_budget_monthly_spent_usd) "
                        "/ max by (budget) (ai_budget_monthly_limit_usd > 0)",
                        "{{budget}}",
                    ),
                ),
                "Spend this month over each monthly cap (MONTHLY_BUDGET_USD_*), when set.",
                unit="percentunit",
                kind="bargauge",
                thresholds=((0.8, "yellow"), (0.9, "orange"), (1, "red")),
            ),
            Panel(
                "Tokens per provider",
                (
                    Query(
                        f"sum by (provider, token_type) (rate(ai_provider_tokens_total[{RATE}]))",
                        "{{provider}} {{token_type}}",
                    ),
                ),
                "Input and output tokens per second as the upstreams report them.",
            ),
        ),
    ),
    (
        "Keys and cache",
        (
            Panel(
                "Key quota used today",
                (
                    Query(
                        "max by (provider, key_id) (ai_provider_key_usage_ratio)",
                        "{{provider}} {{key_id}}",
                    ),
                ),
                "Requests each key made today over its daily quota (<P>_RPD_PER_KEY). Alert "
                "AIProviderKeyQuotaNearlyUsed above 90 %.",
                unit="percentunit",
                kind="bargauge",
                thresholds=((0.9, "orange"), (1, "red")),
            ),
            Panel(
                "Keys by state",
                (
                    Query(
                        "count by (provider, state) (max by (provider, key_id, state) "
                        "(ai_provider_key_state) == 1)",
                        "{{provider}} {{state}}",
                    ),
                ),
                "Keys active, resting (rate limited or at quota) and retired (refused).",
            ),
            Panel(
                "Response cache hit ratio",
                (
                    Query(
                        f'sum(rate(ai_cache_requests_total{{result="hit"}}[{RATE}])) '
                        f"/ sum(rate(ai_cache_requests_total[{RATE}]))",
                        "hit ratio",
                    ),
                ),
                "Hits over lookups, while the cache is on. Alert AICacheHitRatioLow under 50 %.",
                unit="percentunit",
                thresholds=((0.5, "green"),),
            ),
        ),
    ),
    (
        "Ledger and shared state",
        (
            Panel(
                "Ledger buffer",
                (Query("ai_ledger_buffer_rows", "{{instance}}"),),
                "Usage rows waiting to be written, per process. Alert AILedgerBufferGrowing "
                "when it never empties and grows.",
            ),
            Panel(
                "Ledger write failures",
                (
                    Query(
                        f"sum by (reason) (increase(ai_ledger_write_failures_total[{RATE}]))",
                        "{{reason}}",
                    ),
                ),
                "database: failed batches (kept and retried); buffer_full: dropped rows.",
            ),
            Panel(
                "Shared state (Redis) and replicas",
                (
                    Query("ai_shared_state_up", "redis from {{instance}}"),
                    Query('up{job="gateway"}', "scrape {{instance}}"),
                ),
                "1 while Redis answers each replica (absent without REDIS_URL); 1 while "
                "Prometheus scrapes the replica.",
                kind="state-timeline",
                mappings=UP_DOWN,
            ),
        ),
    ),
    (
        "Full-text detection",
        (
            Panel(
                "Detections by deciding tier",
                (
                    Query(
                        "sum by (tier, available, confidence) "
                        f"(rate(literature_detections_total[{RATE}]))",
                        "{{tier}} available={{available}} {{confidence}}",
                    ),
                ),
                "Papers decided per second, by the tier that decided (none when not "
                "available) and confidence.",
            ),
            Panel(
                "Tier runs by outcome",
                (
                    Query(
                        f"sum by (tier, outcome) (rate(literature_tier_attempts_total[{RATE}]))",
                        "{{tier}} {{outcome}}",
                    ),
                ),
                "Waterfall tier runs: decided, found, not_found, refused, timeout, error.",
            ),
            Panel(
                "Tier latency p95",
                quantiles("literature_tier_duration_seconds", "tier", (0.95,)),
                "Time one tier spends on one paper.",
                unit="s",
            ),
            Panel(
                "Outbound fetches by outcome",
                (
                    Query(
                        f"sum by (publisher, outcome) (rate(literature_fetches_total[{RATE}]))",
                        "{{publisher}} {{outcome}}",
                    ),
                    Query(
                        'sum(rate(literature_cache_requests_total{result="hit"}'
                        f"[{RATE}])) / sum(rate(literature_cache_requests_total[{RATE}]))",
                        "result cache hit ratio",
                    ),
                ),
                "Requests to publishers and indexes by status class or failure; the detection "
                "result cache's hit ratio.",
            ),
        ),
    ),
)

# Panels whose queries must return data as soon as the service has served traffic (checked
# against the real service in tests/integration/test_prometheus_real.py).
CORE = (
    "Upstream calls by provider and outcome",
    "Upstream latency percentiles",
    "Gateway overhead",
    "Circuit breaker state",
    "Daily budget used",
    "Key quota used today",
    "Response cache hit ratio",
    "Ledger buffer",
    "Shared state (Redis) and replicas",
    "Detections by deciding tier",
)


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": colour, "value": value} for value, colour in panel.thresholds]
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "thresholds": {"mode": "absolute", "steps": steps},
        "mappings": list(panel.mappings),
    }
    if panel.unit == "percentunit":
        defaults |= {"min": 0}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": panel.options or {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "datasource": DATASOURCE,
                "refId": chr(ord("A") + index),
                "expr": query.expr,
                "legendFormat": query.legend,
                "range": True,
            }
            for index, query in enumerate(panel.queries)
        ],
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    panel_id = 1
    y = 0
    for title, row in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        x = 0
        for panel in row:
            if x + panel.width > WIDTH:
                x = 0
                y += panel.height
            panels.append(panel_json(panel, panel_id, x, y))
            panel_id += 1
            x += panel.width
        y += max(p.height for p in row)
    return {
        "uid": "literature-ai-gateway",
        "title": "Literature AI Gateway",
        "description": "Providers, budgets, keys, cache, ledger, shared state and full-text "
        "detection. Alerts: infra/prometheus/rules.yml; runbooks: docs/runbooks/.",
        "tags": ["literature-ai-gateway"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> int:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
