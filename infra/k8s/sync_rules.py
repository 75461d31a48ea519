"""Write infra/k8s/base/prometheusrule.yaml from infra/prometheus/rules.yml.

The PrometheusRule carries exactly the groups of the rules file (one source of truth, tested
with promtool); tests/unit/test_k8s_manifests.py fails when they drift. Run after editing the
rules: `python -m infra.k8s.sync_rules`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

INFRA = Path(__file__).resolve().parents[1]
RULES = INFRA / "prometheus" / "rules.yml"
TARGET = INFRA / "k8s" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from infra/prometheus/rules.yml by `python -m infra.k8s.sync_rules`; do not edit.
# The Prometheus Operator loads these groups as the compose Prometheus loads the rules file
# (the ServiceMonitor relabels the scrape job to `gateway`, as the rules expect).
"""


def rule_groups(path: Path = RULES) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the rules' expressions) as `|` blocks, as in the rules file."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render(groups: list[dict[str, Any]]) -> str:
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "literature-ai-gateway"},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(resource, Dumper=_Dumper, sort_keys=False, width=100)


def main() -> None:
    TARGET.write_text(render(rule_groups()))
    print(f"wrote {TARGET.relative_to(INFRA.parent)}")


if __name__ == "__main__":
    main()
