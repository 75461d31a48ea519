"""Every alert leads somewhere real: its `runbook_url` is a page in docs/runbooks/, every page
has the four sections an on-call reads (what it means, how to confirm, what to do, how to roll
back), the procedures the issue asks for exist, and the index lists every page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.prometheus import ROOT, load_rules

RUNBOOKS = ROOT / "docs" / "runbooks"
SECTIONS = ("## What it means", "## How to confirm", "## What to do", "## How to roll back")
PROCEDURES = (
    "rotate-a-provider-key.md",
    "raise-a-budget-mid-day.md",
    "add-a-replica.md",
    "lose-redis.md",
    "restore-the-ledger.md",
)


def pages() -> list[Path]:
    return sorted(p for p in RUNBOOKS.glob("*.md") if p.name != "README.md")


@pytest.mark.parametrize("rule", load_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_runbook_url_is_a_page(rule: dict[str, str]) -> None:
    url = rule["annotations"]["runbook_url"]  # type: ignore[index]
    page = ROOT / url
    assert page.is_file(), url
    # The page is about this alert: its title names it.
    assert page.read_text().splitlines()[0] == f"# {rule['alert']}"


def test_every_page_has_the_four_sections_in_order() -> None:
    assert pages()
    for page in pages():
        headings = [line for line in page.read_text().splitlines() if line.startswith("## ")]
        assert headings == list(SECTIONS), page.name


def test_the_procedures_exist() -> None:
    names = {page.name for page in pages()}
    assert set(PROCEDURES) <= names


def test_every_page_is_an_alert_or_a_procedure_and_in_the_index() -> None:
    alert_pages = {Path(rule["annotations"]["runbook_url"]).name for rule in load_rules()}
    index = (RUNBOOKS / "README.md").read_text()
    linked = set(re.findall(r"\]\(([a-z0-9-]+\.md)\)", index))
    for page in pages():
        assert page.name in alert_pages | set(PROCEDURES), f"{page.name}: orphan page"
        assert page.name in linked, f"{page.name} missing from docs/runbooks/README.md"
    assert linked <= {page.name for page in pages()}, "the index links a missing page"


def test_runbooks_name_only_metrics_and_variables_that_exist() -> None:
    """A runbook that tells an on-call to query a metric the rules never saw, or to set a
    variable no setting reads, sends them the wrong way at the worst moment."""
    from app.core.config_check import unknown_variables

    rule_text = (ROOT / "infra" / "prometheus" / "rules.yml").read_text()
    dashboard = (ROOT / "infra" / "grafana" / "dashboards" / "gateway.json").read_text()
    known_metrics = rule_text + dashboard
    for page in pages():
        text = page.read_text()
        for metric in set(re.findall(r"\b((?:ai|literature|http_server)_[a-z0-9_]+)\b", text)):
            if metric.startswith("ai_budget_alerts"):
                continue  # the service's own alert counter, not read by a rule
            assert metric in known_metrics, f"{page.name}: {metric}"
        # `NAME` or `NAME=value` in code spans; `<P>_...` and `..._*` patterns are not names.
        variables = set(re.findall(r"`([A-Z][A-Z0-9_]*_[A-Z0-9_]+)(?:=[^`]*)?`", text))
        unknown = unknown_variables(dict.fromkeys(variables, "x"))
        assert not unknown, f"{page.name}: {unknown}"
