"""Prometheus for tests: the rules and dashboard files, metric names read out of PromQL, the
Debian `promtool`/`prometheus` binaries (skipped on a developer machine without them, a
failure in CI), and a real Prometheus server on a free loopback port."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from tests.support.live import free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra" / "prometheus" / "rules.yml"
RULE_TESTS = ROOT / "infra" / "prometheus" / "tests"
DASHBOARD = ROOT / "infra" / "grafana" / "dashboards" / "gateway.json"
INSTALL_HINT = "bash infra/ci/install-prometheus.sh (Debian package prometheus)"

T = TypeVar("T")


def binary(name: str) -> str:
    """The path of `promtool` or `prometheus`. Absent on a developer machine: skip, saying how
    to install it. Absent in CI (CI=true): fail, since .ci/run installs it and a skip there
    would hide that the rules were never checked."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed: {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI must run the Prometheus checks")
    pytest.skip(message)


def load_rules(path: Path = RULES) -> list[dict[str, Any]]:
    """Every alerting rule of the file, groups flattened."""
    document = yaml.safe_load(path.read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Panels with queries, rows' nested panels included."""
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.extend(panel.get("panels", []))
        if panel.get("type") != "row":
            panels.append(panel)
    return panels


# Grafana's interval variables, replaced by a fixed range so Prometheus can run the query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


# PromQL words that look like identifiers but name no metric.
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "inf",
        "nan",
        "atan2",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\w+")
# Numbers and durations (`offset 5m`, `1h30m`), so their units are not taken for names.
_NUMBER = re.compile(
    r"(?<![\w:.])(?:0x[0-9a-fA-F]+|(?:\d+(?:ms|[smhdwy]))+(?!\w)"
    r"|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)"
)
_IDENTIFIER = re.compile(r"(?<![\w:])([A-Za-z_:][\w:]*)(?!\w)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads.

    A small tokenizer, not a parser: strings, label matchers, ranges, grouping label lists,
    numbers and Grafana variables are removed first; what is left that looks like an
    identifier and is not a function call (followed by `(`) or a keyword is a metric name.
    Enough for the queries we write (tested on them); a selector written `{__name__="x"}`
    is not recognised.
    """
    text = _STRING.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def poll(check: Callable[[], T | None], *, timeout_s: float, what: str, every_s: float = 0.2) -> T:
    """Call `check` until it returns something other than None, or fail after `timeout_s`
    saying `what` was awaited. A deadline, not a fixed sleep: fast machines finish fast."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


@dataclass
class PrometheusServer:
    """A real `prometheus` on 127.0.0.1, its data and log in a temporary directory.

    `targets` are host:port pairs scraped at /metrics every second as job `gateway` (the job
    name the rules use); `rules` is a rules file; rules are evaluated every second."""

    targets: list[str]
    rules: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="prometheus-")))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> PrometheusServer:
        config = {
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "scrape_timeout": "1s",
            },
            "rule_files": [str(self.rules)],
            "scrape_configs": [
                {"job_name": "gateway", "static_configs": [{"targets": self.targets}]}
            ],
        }
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        log = (self.workdir / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        def ready() -> bool | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log()[-2000:]}")
            try:
                return (
                    httpx.get(f"{self.url}/-/ready", timeout=1, trust_env=False).is_success or None
                )
            except httpx.TransportError:
                return None

        poll(ready, timeout_s=timeout_s, what="prometheus to be ready")
        return self

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` member, or an AssertionError with Prometheus' error."""
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5, trust_env=False)
        body = response.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
        return result

    def metric_names(self) -> set[str]:
        return set(self.api("label/__name__/values"))

    def alerts(self, name: str) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts of that name."""
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def rules_with_short_for(path: Path, target: Path, *, for_s: dict[str, str], default: str) -> Path:
    """The rules file with every `for:` replaced (by alert name, else `default`) and the
    expressions untouched: the real test waits seconds, not minutes."""
    document = yaml.safe_load(path.read_text())
    for group in document["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = for_s.get(rule["alert"], default)
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def iter_exprs() -> Iterator[tuple[str, str]]:
    """(where, expr) for every rule and every dashboard target."""
    for rule in load_rules():
        yield f"rule {rule['alert']}", rule["expr"]
    for panel in dashboard_panels(load_dashboard()):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
