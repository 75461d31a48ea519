"""The Grafana dashboard: the committed JSON is what infra/grafana/build_dashboard.py makes,
every panel reads the provisioned datasource (uid `prometheus`) and the issue's topics each
have a panel. Its queries are run against a real Prometheus scraping the real service in
tests/integration/test_prometheus_real.py."""

from __future__ import annotations

from infra.grafana import build_dashboard
from tests.support.prometheus import dashboard_panels, load_dashboard, metric_names


def test_committed_json_is_the_generator_output() -> None:
    """Edit build_dashboard.py, run it, commit both: never the JSON alone."""
    assert build_dashboard.OUTPUT.read_text() == build_dashboard.render()


def test_every_panel_queries_the_provisioned_datasource() -> None:
    panels = dashboard_panels(load_dashboard())
    assert panels
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus"
            assert metric_names(target["expr"]), (panel["title"], target["expr"])


def test_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = load_dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, panel["title"]
        cells |= area


def test_the_issue_topics_each_have_a_panel() -> None:
    """Traffic and errors by provider and outcome, latency percentiles, time to first token,
    breaker states, fallbacks and retries, cost and budget burn against limits, key quota,
    cache hit ratio, gateway overhead, ledger buffer, shared-state health, detections by tier."""
    exprs = " ".join(t["expr"] for p in dashboard_panels(load_dashboard()) for t in p["targets"])
    for metric in (
        "ai_provider_requests_total",
        "ai_provider_latency_seconds_bucket",
        "ai_provider_time_to_first_token_seconds_bucket",
        "ai_provider_circuit_breaker_state",
        "ai_fallbacks_total",
        "ai_provider_retries_total",
        "ai_provider_cost_usd_total",
        "ai_budget_spent_usd",
        "ai_budget_limit_usd",
        "ai_provider_key_usage_ratio",
        "ai_cache_requests_total",
        "ai_gateway_overhead_seconds_bucket",
        "ai_ledger_buffer_rows",
        "ai_shared_state_up",
        "literature_detections_total",
    ):
        assert metric in exprs, metric
    titles = {p["title"] for p in dashboard_panels(load_dashboard())}
    assert set(build_dashboard.CORE) <= titles
