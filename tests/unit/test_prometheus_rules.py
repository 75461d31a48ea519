"""The alert rules are code: `promtool check rules` and `promtool test rules` must pass, every
alert has a unit test that shows it firing and one that shows it silent, each carries what an
on-call needs (severity, a summary naming the provider or budget, a runbook), and the tests
have teeth (a broken rule makes them fail). The metric names are checked against a real
Prometheus scraping the real service in tests/integration/test_prometheus_real.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.support.prometheus import (
    RULE_TESTS,
    RULES,
    binary,
    load_rules,
    metric_names,
)

SEVERITIES = {"info", "warning", "critical"}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def rule_test_files(directory: Path = RULE_TESTS) -> list[Path]:
    return sorted(directory.glob("*.yml"))


def test_promtool_check_rules_passes() -> None:
    result = run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run("test", "rules", *map(str, rule_test_files()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(rule_test_files())


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in rule_test_files():
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in load_rules()}
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - silent == set(), "alerts never shown silent"


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in load_rules()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("rule", load_rules(), ids=lambda rule: rule["alert"])
def test_alert_says_how_bad_what_and_where_to_read(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert re.fullmatch(r"docs/runbooks/[a-z0-9-]+\.md", annotations["runbook_url"])
    # An alert per provider or per budget names it in its summary.
    for label in ("provider", "budget"):
        if re.search(rf"by \([^)]*\b{label}\b", rule["expr"]):
            assert f"$labels.{label}" in annotations["summary"], label


# The service's own budget alert levels (app/modules/ai/budget.py ALERT_LEVELS) are the rules'.
def test_budget_alerts_use_the_service_levels() -> None:
    from app.modules.ai.budget import ALERT_LEVELS

    thresholds = []
    for rule in load_rules():
        if rule["alert"].startswith("AIBudget"):
            found = {float(t) for t in re.findall(r">=\s*([0-9.]+)", rule["expr"])}
            assert len(found) == 1, rule["alert"]
            thresholds.append(round(found.pop() * 100))
    assert sorted(thresholds) == list(ALERT_LEVELS)


def _mutated_rules_fail(tmp_path: Path, old: str, new: str) -> subprocess.CompletedProcess[str]:
    """Copy the rules and their tests, break one expression, run the unit tests."""
    text = RULES.read_text()
    assert old in text
    (tmp_path / "rules.yml").write_text(text.replace(old, new, 1))
    tests = tmp_path / "tests"
    shutil.copytree(RULE_TESTS, tests)
    return run("test", "rules", *map(str, rule_test_files(tests)))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # The caller's bad requests counted as provider failures.
        ('outcome!~"success|cancelled|bad_request|caller_deadline"', 'outcome!~"success"'),
        # A threshold moved.
        ("> 0.90", "> 0.98"),
        # The breaker alert ignoring the half-open state.
        ("(ai_provider_circuit_breaker_state) != 0", "(ai_provider_circuit_breaker_state) == 2"),
    ],
)
def test_the_unit_tests_catch_a_broken_rule(tmp_path: Path, old: str, new: str) -> None:
    result = _mutated_rules_fail(tmp_path, old, new)
    assert result.returncode != 0, result.stdout


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('absent(up{job="gateway"})', {"up"}),
        (
            'sum by (provider) (rate(ai_provider_requests_total{outcome!~"a|b"}[5m])) > 0.10',
            {"ai_provider_requests_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (provider, le) "
            "(rate(ai_provider_latency_seconds_bucket[$__rate_interval])))",
            {"ai_provider_latency_seconds_bucket"},
        ),
        (
            'label_replace(max by (budget) (spent) / max by (budget) (limit > 0), "period", '
            '"day", "", "") >= 0.8 or monthly',
            {"spent", "limit", "monthly"},
        ),
        ("a offset 1h30m and on (x) group_left (y) b unless c * 1e3", {"a", "b", "c"}),
        ("sum(rate(x[5m])) by (reason) / ignoring(le) y:recorded", {"x", "y:recorded"}),
    ],
)
def test_metric_names_are_read_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset", "inf"}
_NAME = st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True).filter(
    lambda n: n not in _KEYWORDS | {"group_left", "group_right", "nan", "atan2"}
)


@given(
    name=_NAME,
    label=_NAME,
    value=st.text(st.characters(blacklist_characters='"\\\n'), max_size=20),
    window=st.sampled_from(["1m", "5m", "1h30m", "$__rate_interval"]),
)
def test_label_values_and_ranges_never_become_names(
    name: str, label: str, value: str, window: str
) -> None:
    """Whatever a label value holds (braces, words, parentheses), only the metric is read."""
    expr = f'sum by ({label}) (rate({name}{{{label}="{value}"}}[{window}])) > 0.5'
    assert metric_names(expr) == {name}
